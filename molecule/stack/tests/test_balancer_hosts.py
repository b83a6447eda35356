"""testinfra on the data path's hosts of the lab: the balancer, the app hosts (every instance,
the service's sandbox and file modes, the tombstone purge) and the PostgreSQL hosts. The traffic
through the balancer is tested by tests/stack/test_balancer.py.

Outside Molecule, against the lab (read-only but for one run of the tombstone purge, a thing the
service does on its own):
    ANSIBLE_VAULT_PASSWORD_FILE=inventory/lab/vault-password.txt .venv/bin/pytest \
        --ansible-inventory=inventory/lab-ssh molecule/stack/tests/test_balancer_hosts.py
"""

import hashlib
import json

import pytest

testinfra_hosts = ["lb", "app", "postgres"]


def groups_of(host):
    return host.ansible.get_variables()["group_names"]


def instances_of(host):
    return host.ansible.get_variables().get("django_kv_instances", [8000, 8001, 8002])


@pytest.mark.only_groups("app")
def test_app_hosts(host):
    internal = host.ansible.get_variables()["internal_address"]
    ports = instances_of(host)
    with host.sudo():
        for port in ports:
            unit = host.service(f"kv@{port}")
            assert unit.is_running and unit.is_enabled, f"kv@{port}"
            assert host.socket(f"tcp://{internal}:{port}").is_listening, port
            log = host.file(f"/var/log/kv/kv-{port}.log")
            assert log.exists and log.size > 0, log.path
            last = host.check_output(f"tail -n 1 /var/log/kv/kv-{port}.log")
            json.loads(last)  # one JSON object per line
        # processes run as the unprivileged user, with the hardening in force
        assert {p.user for p in host.process.filter(comm="gunicorn")} == {"kv"}
        props = host.run(
            f"systemctl show kv@{ports[0]}"
            " -p NoNewPrivileges -p ProtectSystem -p PrivateTmp -p User"
        ).stdout
        for expected in (
            "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "User=kv"
        ):
            assert expected in props, props
        env = host.file("/etc/kv/env")
        assert (env.user, env.group, env.mode) == ("root", "kv", 0o640)
        assert env.mode & 0o007 == 0, "the env file must not be readable by others"
        assert host.run("runuser -u nobody -- cat /etc/kv/env").rc != 0
        assert host.file("/etc/kv").mode == 0o750
        current = host.file("/opt/kv/current")
        assert current.is_symlink and current.linked_to.startswith("/opt/kv/releases/")
        code = host.file(current.linked_to + "/app/manage.py")
        assert code.user == "root" and code.mode & 0o022 == 0, "the service must not own its code"
        # the wheels came from the controller: the release carries its own virtualenv
        assert host.file(current.linked_to + "/venv/bin/gunicorn").exists
        assert host.run("runuser -u kv -- test -w /opt/kv/current/app").rc != 0


@pytest.mark.only_groups("app")
def test_purge_timer(host):
    """The tombstone purge: timer enabled and waiting, units valid, one run succeeds and says
    what it did (test_hardening.py checks the same run's sandbox)."""
    with host.sudo():
        timer = host.service("kv-purge-tombstones.timer")
        assert timer.is_enabled and timer.is_running
        units = " ".join(
            f"/etc/systemd/system/kv-purge-tombstones.{t}" for t in ("service", "timer")
        )
        verify = host.run(f"systemd-analyze verify {units}")
        assert verify.rc == 0, verify.stderr
        props = host.run(
            "systemctl show kv-purge-tombstones.service -p NoNewPrivileges -p ProtectSystem -p User"
        ).stdout
        for expected in ("NoNewPrivileges=yes", "ProtectSystem=strict", "User=kv"):
            assert expected in props, props
        run = host.run("timeout 120 systemctl start kv-purge-tombstones.service")
        assert run.rc == 0, run.stderr
        result = host.run("systemctl show kv-purge-tombstones.service -p Result -p ExecMainStatus")
        assert "Result=success" in result.stdout and "ExecMainStatus=0" in result.stdout
        journal = host.run(
            "journalctl -u kv-purge-tombstones.service -n 20 --no-pager -o cat"
        ).stdout.splitlines()
    assert any(line == "unchanged" or line.startswith("changed ") for line in journal), journal


@pytest.mark.only_groups("lb")
def test_lb_host(host):
    variables = host.ansible.get_variables()
    internal = variables["internal_address"]
    with host.sudo():
        for name in ("nginx", "prometheus-nginx-exporter"):
            assert host.service(name).is_running and host.service(name).is_enabled, name
        for sock in (
            "tcp://0.0.0.0:80",
            "tcp://0.0.0.0:443",
            "tcp://127.0.0.1:8080",  # stub_status, for the exporter only
            f"tcp://{internal}:9113",  # nginx, in front of the exporter
            "tcp://127.0.0.1:19113",  # the exporter itself, loopback only
        ):
            assert host.socket(sock).is_listening, sock
        assert not host.socket(f"tcp://{internal}:19113").is_listening
        assert not host.socket(f"tcp://{internal}:8080").is_listening
        htpasswd = host.file("/etc/nginx/kv-exporter.htpasswd")
        assert (htpasswd.user, htpasswd.group, htpasswd.mode) == ("root", "www-data", 0o640)
        # role pki's entry point bcrypt, cost 5, salt sha256("<host>:<file>:<user>")[:21] + "."
        seed = f"{host.backend.get_hostname()}:/etc/nginx/kv-exporter.htpasswd:prometheus"
        salt = hashlib.sha256(seed.encode()).hexdigest()[:21] + "."
        assert htpasswd.content_string.startswith(f"prometheus:$2b$05${salt}")
        assert variables["vault_monitoring_scrape_password"] not in htpasswd.content_string
        key = host.file("/etc/nginx/tls/kv.key")
        assert (key.user, key.mode) == ("root", 0o600)
        test = host.run("nginx -t -q")
        assert test.rc == 0, test.stderr
    status = host.run("curl -sf http://127.0.0.1:8080/nginx_status")
    assert status.rc == 0 and "Active connections" in status.stdout, status.stderr
    # the exporter's metrics through nginx: TLS verified with the project CA, the scrape login
    login = "prometheus:" + variables["vault_monitoring_scrape_password"]
    https = f"https://{internal}:9113/metrics"
    ca = "--cacert /etc/nginx/pki/ca.crt"
    metrics = host.run(f"curl -sf {ca} -u %s {https}", login).stdout
    assert "nginx_up 1" in metrics
    anonymous = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' {ca} {https}").stdout
    assert anonymous == "401"
    assert host.run(f"curl -sf -o /dev/null {ca} --tls-max 1.2 -u %s {https}", login).rc != 0
    # HTTP/2 and modern TLS only
    h2 = host.run("curl -sk --http2 -o /dev/null -w '%{http_version}' https://127.0.0.1/healthz")
    assert h2.stdout == "2", (h2.stdout, h2.stderr)
    old_tls = host.run("curl -sk --tlsv1.1 --tls-max 1.1 -o /dev/null https://127.0.0.1/healthz")
    assert old_tls.rc != 0


@pytest.mark.only_groups("postgres")
def test_postgres_hosts(host):
    listening = host.run("ss -Hltn 'sport = :5432'").stdout
    assert listening.strip(), "nothing listens on 5432"
