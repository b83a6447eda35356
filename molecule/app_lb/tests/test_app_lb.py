"""molecule/app_lb: the balancer, two app hosts (two instances each) and PostgreSQL.

Per-host checks run on every host through testinfra; the traffic checks run on the controller
against the balancer's address on the scenario's own docker network (no other destination), and
every loop is bounded in count and time.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import testinfra
import urllib3

from tests.app_lb.load import Load

ROOT = Path(__file__).resolve().parents[3]

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

testinfra_hosts = ["all"]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
PREFIX = "app_lb-"
LB, APP1, APP2 = PREFIX + "lb1", PREFIX + "app1", PREFIX + "app2"
APPS = [APP1, APP2]
PORTS = [8000, 8001]
RW = "molecule-rw-token-0123456789abcdef"
RO = "molecule-ro-token-0123456789abcdef"
MAX_VALUE = 65536
PACE = 0.05  # seconds between sequential requests: below the scenario's rate limit (40/s)


def get_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def address(name):
    out = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            name,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert out, f"{name} has no address"
    return out


@pytest.fixture(scope="module")
def base():
    return f"https://{address(LB)}"


def new_session():
    """Straight to the scenario's containers: no proxy, no CA bundle from the environment."""
    s = requests.Session()
    s.trust_env = False
    s.verify = False
    return s


@pytest.fixture(scope="module")
def session():
    return new_session()


def auth(token=RW):
    return {"Authorization": f"Bearer {token}"}


def wait_until(check, what, timeout=120, every=1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")


def groups_of(host):
    return host.ansible.get_variables().get("group_names", [])


# ------------------------------------------------------------------ every host


def test_app_hosts(host):
    if "app" not in groups_of(host):
        pytest.skip("not an app host")
    internal = host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"][
        "ansible_default_ipv4"
    ]["address"]
    for port in PORTS:
        unit = host.service(f"kv@{port}")
        assert unit.is_running and unit.is_enabled, f"kv@{port}"
        assert host.socket(f"tcp://{internal}:{port}").is_listening
        log = host.file(f"/var/log/kv/kv-{port}.log")
        assert log.exists and log.size > 0
        json.loads(log.content_string.strip().splitlines()[-1])  # one JSON object per line
    # processes run as the unprivileged user, with the hardening in force
    assert {p.user for p in host.process.filter(comm="gunicorn")} == {"kv"}
    props = host.run(
        "systemctl show kv@8000 -p NoNewPrivileges -p ProtectSystem -p PrivateTmp -p User"
    ).stdout
    for expected in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "User=kv"):
        assert expected in props
    env = host.file("/etc/kv/env")
    assert (env.user, env.group, env.mode) == ("root", "kv", 0o640)
    assert env.mode & 0o007 == 0, "the env file must not be readable by others"
    assert host.run("runuser -u nobody -- cat /etc/kv/env").rc != 0
    assert host.file("/etc/kv").mode == 0o750
    current = host.file("/opt/kv/current")
    assert current.is_symlink and current.linked_to.startswith("/opt/kv/releases/")
    code = host.file(current.linked_to + "/app/manage.py")
    assert code.user == "root" and code.mode & 0o022 == 0, "the service must not own its code"
    # the wheels came from the controller: pip never reached an index on the host
    assert host.file(current.linked_to + "/venv/bin/gunicorn").exists
    assert host.run("runuser -u kv -- test -w /opt/kv/current/app").rc != 0


def test_purge_timer(host):
    """The tombstone purge: timer enabled and waiting, units valid, one run succeeds."""
    if "app" not in groups_of(host):
        pytest.skip("not an app host")
    timer = host.service("kv-purge-tombstones.timer")
    assert timer.is_enabled and timer.is_running
    units = " ".join(f"/etc/systemd/system/kv-purge-tombstones.{t}" for t in ("service", "timer"))
    verify = host.run(f"systemd-analyze verify {units}")
    assert verify.rc == 0, verify.stderr
    props = host.run(
        "systemctl show kv-purge-tombstones.service -p NoNewPrivileges -p ProtectSystem -p User"
    ).stdout
    for expected in ("NoNewPrivileges=yes", "ProtectSystem=strict", "User=kv"):
        assert expected in props
    run = host.run("timeout 120 systemctl start kv-purge-tombstones.service")
    assert run.rc == 0, run.stderr
    result = host.run("systemctl show kv-purge-tombstones.service -p Result -p ExecMainStatus")
    assert "Result=success" in result.stdout and "ExecMainStatus=0" in result.stdout
    journal = host.run(
        "journalctl -u kv-purge-tombstones.service -n 20 --no-pager -o cat"
    ).stdout.splitlines()
    assert any(line == "unchanged" or line.startswith("changed ") for line in journal), journal


def test_lb_host(host):
    if "lb" not in groups_of(host):
        pytest.skip("not a balancer")
    internal = host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"][
        "ansible_default_ipv4"
    ]["address"]
    for name in ("nginx", "prometheus-nginx-exporter"):
        assert host.service(name).is_running and host.service(name).is_enabled, name
    for sock in (
        "tcp://0.0.0.0:80",
        "tcp://0.0.0.0:443",
        f"tcp://{internal}:8080",
        f"tcp://{internal}:9113",
    ):
        assert host.socket(sock).is_listening, sock
    key = host.file("/etc/nginx/tls/kv.key")
    assert (key.user, key.mode) == ("root", 0o600)
    assert host.run("nginx -t -q").rc == 0
    status = host.run(f"curl -sf http://{internal}:8080/nginx_status")
    assert status.rc == 0 and "Active connections" in status.stdout
    metrics = host.run(f"curl -sf http://{internal}:9113/metrics").stdout
    assert "nginx_up 1" in metrics
    # HTTP/2 and modern TLS only
    h2 = host.run("curl -sk --http2 -o /dev/null -w '%{http_version}' https://127.0.0.1/healthz")
    assert h2.stdout == "2"
    assert (
        host.run("curl -sk --tlsv1.1 --tls-max 1.1 -o /dev/null https://127.0.0.1/healthz").rc != 0
    )


def test_postgres_hosts(host):
    if "postgres" not in groups_of(host):
        pytest.skip("not a PostgreSQL host")
    assert (
        host.socket("tcp://0.0.0.0:5432").is_listening
        or host.run("ss -Hltn 'sport = :5432'").stdout
    )


# ------------------------------------------------------------------ through the balancer


def test_http_redirects_to_https():
    r = new_session().get(f"http://{address(LB)}/api/kv/x?y=1", allow_redirects=False, timeout=10)
    assert r.status_code == 301
    assert r.headers["Location"] == f"https://{address(LB)}/api/kv/x?y=1"


def test_put_get_with_token_and_401_without(base, session):
    value = {"text": "héllo", "n": [1, 2, 3]}
    r = session.put(
        f"{base}/api/kv/molecule-key", json={"value": value}, headers=auth(), timeout=15
    )
    assert r.status_code in (200, 201), r.text
    r = session.get(f"{base}/api/kv/molecule-key", headers=auth(RO), timeout=15)
    assert r.status_code == 200 and r.json()["value"] == value
    assert "Strict-Transport-Security" in r.headers
    for headers in ({}, auth("not-a-valid-token-0000000000")):
        r = session.get(f"{base}/api/kv/molecule-key", headers=headers, timeout=15)
        assert r.status_code == 401, r.text
        assert r.json()["error"]
    # the read-only token cannot write
    r = session.put(f"{base}/api/kv/molecule-key", json={"value": 1}, headers=auth(RO), timeout=15)
    assert r.status_code == 403


def test_request_id_generated_or_passed_through(base, session):
    r = session.get(f"{base}/healthz", timeout=10)
    assert len(r.headers["X-Request-ID"]) >= 16
    # a write: the app logs every write (KV_ACCESS_LOG=writes), fast successful reads only in nginx
    r = session.put(
        f"{base}/api/kv/molecule-rid-key",
        json={"value": "rid"},
        headers={**auth(), "X-Request-ID": "molecule-rid-42"},
        timeout=15,
    )
    assert r.status_code in (200, 201), r.text
    assert r.headers["X-Request-ID"] == "molecule-rid-42"
    lb = get_host(LB)
    line = wait_until(
        lambda: [
            ln
            for ln in lb.file("/var/log/nginx/kv_access.json").content_string.splitlines()
            if "molecule-rid-42" in ln
        ],
        "the access log line",
    )[-1]
    entry = json.loads(line)
    assert entry["status"] in (200, 201) and entry["request_id"] == "molecule-rid-42"
    assert entry["upstream_addr"] and float(entry["request_time"]) >= 0
    assert entry["upstream_response_time"]
    # the app saw the same id (its JSON log on the instance that answered)
    instance = r.headers["X-KV-Instance"]
    name, port = instance.rsplit(":", 1)
    assert (
        get_host(name).run(f"grep -c molecule-rid-42 /var/log/kv/kv-{port}.log").stdout.strip()
        != "0"
    )


def test_internal_endpoints_not_public(base, session):
    for path in ("/metrics", "/metrics/", "/nginx_status"):
        r = session.get(base + path, headers=auth(), timeout=10)
        assert r.status_code == 404, path
        assert "python_info" not in r.text and "Active connections" not in r.text


def assert_json_error(r, code):
    """nginx's own errors look like the app's: JSON {"error", "detail"} with the usual headers."""
    assert r.headers["Content-Type"] == "application/json", (r.status_code, r.headers, r.text)
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert body["detail"]
    assert "<html" not in r.text
    assert len(r.headers.get("X-Request-ID", "")) >= 16
    if r.url.startswith("https://"):
        assert "Strict-Transport-Security" in r.headers


def test_nginx_errors_are_json(base, session):
    # 404 from nginx itself, whatever the extension says
    for path in ("/metrics", "/nginx_status", "/metrics/page.html"):
        r = session.get(base + path, timeout=10)
        assert r.status_code == 404, path
        assert_json_error(r, "not_found")
    # 405: nginx refuses TRACE itself; Allow lists what the app serves on that path
    for path, allow in (
        ("/api/kv/some-key", "GET, PUT, DELETE, HEAD, OPTIONS"),
        ("/api/kv/", "GET, POST, HEAD, OPTIONS"),
        ("/healthz", "GET, HEAD, OPTIONS"),
    ):
        r = session.request("TRACE", base + path, headers=auth(), timeout=10)
        assert r.status_code == 405, (path, r.status_code, r.text)
        assert_json_error(r, "method_not_allowed")
        assert r.headers["Allow"] == allow
    # the app's own 405 keeps its Allow and its JSON
    r = session.request("PATCH", f"{base}/api/kv/some-key", headers=auth(), timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, PUT, DELETE, HEAD, OPTIONS"
    assert r.json()["error"] == "method_not_allowed"
    # 414 and a header block too large (400)
    r = session.get(f"{base}/api/kv/{'k' * 9000}", headers=auth(), timeout=10)
    assert r.status_code == 414
    assert_json_error(r, "uri_too_long")
    # below nginx's limit, above gunicorn's defaults: the app answers (JSON), never gunicorn
    r = session.get(f"{base}/api/kv/{'k' * 5000}", headers=auth(), timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "bad_key", r.text
    r = session.get(f"{base}/healthz", headers={"X-Big": "b" * 9000}, timeout=10)
    assert r.status_code == 400
    assert_json_error(r, "bad_request")
    # plain HTTP to the TLS port
    r = new_session().get(f"http://{address(LB)}:443/healthz", timeout=10)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["error"] == "bad_request"


def test_every_instance_down_gets_json_502(base, session):
    apps = [get_host(h) for h in APPS]
    units = " ".join(f"kv@{p}" for p in PORTS)
    for app in apps:
        assert app.run(f"systemctl stop {units}").rc == 0
    try:
        r = session.get(f"{base}/api/kv/molecule-key", headers=auth(), timeout=30)
        assert r.status_code == 502, r.text
        assert_json_error(r, "upstream_unavailable")
        r = session.put(
            f"{base}/api/kv/molecule-key", json={"value": 1}, headers=auth(), timeout=30
        )
        assert r.status_code == 502, r.text
        assert_json_error(r, "upstream_unavailable")
    finally:
        for app in apps:
            assert app.run(f"systemctl start {units}").rc == 0
    for name in APPS:
        for port in PORTS:
            wait_until(
                lambda name=name, port=port: (
                    get_host(name).run(f"curl -sf http://{address(name)}:{port}/healthz").rc == 0
                ),
                f"kv@{port} on {name} back",
            )
    wait_until(
        lambda: len(spread(base, session, 16)) == len(APPS) * len(PORTS),
        "every instance back in the balancer",
        timeout=60,
        every=2,
    )


def spread(base, session, n=40):
    seen = {}
    for _ in range(n):
        r = session.get(f"{base}/api/kv/molecule-key", headers=auth(), timeout=15)
        assert r.status_code == 200, r.text
        seen[r.headers["X-KV-Instance"]] = seen.get(r.headers["X-KV-Instance"], 0) + 1
        time.sleep(PACE)
    return seen


def test_requests_spread_over_every_instance(base, session):
    seen = spread(base, session)
    expected = {f"{h}:{p}" for h in APPS for p in PORTS}
    print("spread over instances:", seen)
    assert set(seen) == expected


def test_body_above_limit_gets_413(base, session):
    big = "x" * (MAX_VALUE + 8192)
    r = session.put(
        f"{base}/api/kv/too-big",
        data=json.dumps({"value": big}),
        timeout=15,
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert_json_error(r, "value_too_large")
    # chunked (no Content-Length): nginx finds out while reading the body, in @kv_write
    body = json.dumps({"value": big}).encode()
    r = session.put(
        f"{base}/api/kv/too-big",
        data=(body[i : i + 16384] for i in range(0, len(body), 16384)),
        timeout=15,
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert_json_error(r, "value_too_large")


def test_burst_gets_429(base):
    local = threading.local()

    def one(_):
        if not hasattr(local, "session"):
            local.session = new_session()  # keepalive: the burst is not slowed by handshakes
        return local.session.get(f"{base}/healthz", timeout=15)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(300)))
    codes = [r.status_code for r in results]
    print("burst statuses:", {c: codes.count(c) for c in set(codes)})
    assert 429 in codes and 200 in codes
    limited = next(r for r in results if r.status_code == 429)
    assert_json_error(limited, "rate_limited")
    assert limited.headers["Retry-After"] == "1"
    assert set(codes) <= {200, 429}
    time.sleep(2)  # let the bucket refill


def gets_keep_succeeding(base, session, n=30):
    codes = []
    for _ in range(n):
        r = session.get(f"{base}/api/kv/molecule-key", headers=auth(), timeout=20)
        codes.append(r.status_code)
        time.sleep(PACE)
    return codes


def test_one_instance_down(base, session):
    app1 = get_host(APP1)
    assert app1.run("systemctl stop kv@8000").rc == 0
    try:
        codes = gets_keep_succeeding(base, session)
        assert codes == [200] * len(codes), codes
    finally:
        assert app1.run("systemctl start kv@8000").rc == 0
    wait_until(
        lambda: app1.run(f"curl -sf http://{address(APP1)}:8000/healthz").rc == 0, "kv@8000 back"
    )


def test_one_app_host_down(base, session):
    before = address(APP2)
    subprocess.run(["docker", "stop", "-t", "10", APP2], check=True, timeout=60)
    try:
        t0 = time.monotonic()
        codes = gets_keep_succeeding(base, session)
        print(f"with {APP2} stopped: {len(codes)} GETs in {time.monotonic() - t0:.1f}s")
        assert codes == [200] * len(codes), codes
    finally:
        subprocess.run(["docker", "start", APP2], check=True, timeout=60)
    assert address(APP2) == before, "docker gave the restarted host another address"
    app2 = get_host(APP2)
    for port in PORTS:
        wait_until(
            lambda port=port: app2.run(f"curl -sf http://{before}:{port}/healthz").rc == 0,
            f"kv@{port} on {APP2} back after boot",
            timeout=180,
            every=2,
        )
    wait_until(
        lambda: {f"{APP2}:{p}" for p in PORTS} <= set(spread(base, session, 16)),
        f"{APP2} back in the balancer",
        timeout=60,
        every=2,
    )


def releases():
    return {h: get_host(h).file("/opt/kv/current").linked_to for h in APPS}


def run_playbook(playbook, *extra):
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_FORCE_COLOR": "0"}
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        INVENTORY,
        str(ROOT / "playbooks" / playbook),
        *extra,
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    print(f"{playbook}: rc={proc.returncode} in {time.monotonic() - t0:.0f}s")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout


def under_load(base, playbook, *extra):
    load = Load(base, RW, threads=4, rate=8.0, max_seconds=1500).start()
    try:
        time.sleep(3)
        out = run_playbook(playbook, *extra)
        time.sleep(3)
    finally:
        load.stop()
    print(f"{playbook} under load: {load.summary()}")
    assert load.sent > 100, load.summary()
    assert load.failures == [], load.failures[:20]
    return out


def test_rolling_update_under_load_fails_no_request(base, tmp_path):
    before = releases()
    # a new version of the app: the same tree with one changed file
    src = tmp_path / "app"
    shutil.copytree(
        ROOT / "app", src, ignore=shutil.ignore_patterns(".venv", "__pycache__", "tests", ".*cache")
    )
    with open(src / "kvsite" / "__init__.py", "a") as f:
        f.write("# molecule rolling update marker\n")
    under_load(base, "rolling_update.yml", "-e", f"django_kv_app_src={src}")
    after = releases()
    for h in APPS:
        assert after[h] != before[h], f"{h} did not get the new release"
        assert get_host(h).file("/opt/kv/previous").linked_to == before[h]
    test_rolling_update_under_load_fails_no_request.before = before


def test_rollback_under_load_fails_no_request(base):
    before = getattr(test_rolling_update_under_load_fails_no_request, "before", None)
    if before is None:
        pytest.skip("needs the rolling update first")
    under_load(base, "rollback.yml")
    assert releases() == before
