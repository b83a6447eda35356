"""testinfra on the app hosts after site.yml: PostgreSQL answers them only over TLS 1.3 with a
certificate of the project CA that names the address connected to, SCRAM bound to the channel,
and the app's own connections are such.

Every connection runs the app's Python and psycopg2 (the libpq the app uses) as the service user
with the service's environment (/etc/kv/env: user, password), so no secret is on a command line.

Outside Molecule, against the lab (read-only):
    .venv/bin/pytest --hosts='ansible://app' --ansible-inventory=inventory/lab/hosts.yml \
        molecule/stack/tests/test_pg_tls_app.py
"""

import json

import pytest

testinfra_hosts = ["app"]

CA = "/etc/kv/db-ca.crt"
PORT = 5432
PYTHON = "/opt/kv/current/venv/bin/python"
# conninfo in argv[1]; user, password and database from the service's environment
SCRIPT = """
import json, os, sys
import psycopg2
try:
    conn = psycopg2.connect(sys.argv[1], user=os.environ["KV_DB_USER"],
                            password=os.environ["KV_DB_PASSWORD"],
                            dbname=os.environ.get("KV_DB_NAME", "kv"), connect_timeout=5)
except psycopg2.Error as exc:
    print(json.dumps({"ok": False, "error": str(exc)}))
    sys.exit(0)
with conn, conn.cursor() as cur:
    cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    ssl, version = cur.fetchone()
    rows = []
    if len(sys.argv) > 2:
        cur.execute("SELECT s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
                    " WHERE a.application_name = 'kv-app' AND a.client_addr = %s"
                    " AND a.pid <> pg_backend_pid()", [sys.argv[2]])
        rows = cur.fetchall()
conn.close()
print(json.dumps({"ok": True, "ssl": ssl, "version": version, "app": rows}))
"""


@pytest.fixture(scope="module")
def members(host):
    """inventory name -> internal address of every host of group postgres."""
    runner = host.backend.ansible_runner
    names = host.ansible.get_variables()["groups"]["postgres"]
    return {name: runner.get_variables(name)["internal_address"] for name in names}


def connect(host, conninfo, *extra):
    cmd = host.run(
        "systemd-run --quiet --pipe --wait --collect --service-type=exec"
        " --property=User=kv --property=EnvironmentFile=/etc/kv/env %s -c %s %s"
        + " %s" * len(extra),
        PYTHON, SCRIPT, conninfo, *extra,
    )
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout.strip().splitlines()[-1])


def verified(address, **overrides):
    params = {"host": address, "port": PORT, "sslmode": "verify-full", "sslrootcert": CA,
              "channel_binding": "require", **overrides}
    return " ".join(f"{k}={v}" for k, v in params.items())


def test_verify_full_with_channel_binding_reaches_every_member(host, members):
    for name, address in members.items():
        got = connect(host, verified(address))
        # channel_binding=require: libpq fails unless SCRAM-SHA-256-PLUS was done
        assert got["ok"], (name, got)
        assert (got["ssl"], got["version"]) == (True, "TLSv1.3"), (name, got)


def test_a_name_not_in_the_certificate_fails_the_name_check(host, members):
    for name, address in members.items():
        got = connect(host, verified("not-a-member.invalid", hostaddr=address))
        assert not got["ok"], (name, got)
        assert 'does not match host name "not-a-member.invalid"' in got["error"], (name, got)


def test_a_server_outside_the_trusted_ca_is_refused(host, members):
    # the system's public CAs do not vouch for the project's certificates
    for name, address in members.items():
        got = connect(host, verified(address, sslrootcert="/etc/ssl/certs/ca-certificates.crt"))
        assert not got["ok"], (name, got)
        assert "certificate verify failed" in got["error"], (name, got)


def test_without_tls_no_pg_hba_line_matches(host, members):
    for name, address in members.items():
        got = connect(host, f"host={address} port={PORT} sslmode=disable")
        assert not got["ok"], (name, got)
        assert "no pg_hba.conf entry" in got["error"] and "no encryption" in got["error"], (
            name, got)


def test_the_app_is_configured_to_verify_and_bind(host):
    env = host.file("/etc/kv/env").content_string
    assert 'KV_DB_SSLMODE="verify-full"' in env
    assert f'KV_DB_SSLROOTCERT="{CA}"' in env
    assert 'KV_DB_CHANNEL_BINDING="require"' in env
    ca = host.file(CA)
    assert (ca.user, ca.group, ca.mode) == ("root", "kv", 0o644)


def test_the_apps_own_connections_are_tls13(host, members):
    me = host.ansible.get_variables()["internal_address"]
    port = str((host.ansible.get_variables().get("django_kv_instances") or [8000])[0])
    # /readyz asks every node: the instance holds a connection to each afterwards
    ready = host.run("curl -sS -o /dev/null -w '%%{http_code}' http://%s:%s/readyz", me, port)
    assert ready.stdout == "200", ready.stdout + ready.stderr
    seen = []
    for name, address in members.items():
        got = connect(host, verified(address), me)
        assert got["ok"], (name, got)
        seen += [(name, ssl, version) for ssl, version in got["app"]]
    assert seen, "no connection of the app (application_name kv-app) from this host"
    assert all(ssl and version == "TLSv1.3" for _, ssl, version in seen), seen
