"""The balancer on the lab: redirects, tokens, request ids, JSON errors, limits, the spread over
every instance, instances and an app host down, and a rolling update and its rollback under load
that fail no request.

The limits are the lab's own (lb1's nginx.conf, rendered from the inventory); the API token from
the lab's vault (a read-only token is created for the test and revoked after it). Every fault is
healed in a ``finally`` and the test waits until every instance is back in the balancer and the
cluster is healthy, so the tests after these find the lab as ``make lab`` left it. Nothing here
touches PostgreSQL: the primary stays where it is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from . import harness

pytestmark = pytest.mark.lab


def wait_until(check, what: str, timeout: float = 120, every: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # kept as the reason if it never succeeds
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")


@pytest.fixture(scope="module")
def limits(lab):
    return lab.nginx_limits()


@pytest.fixture(scope="module")
def s(lab):
    with lab.session() as session:
        yield session


def plain() -> requests.Session:
    """No token, straight to the lab: no proxy, no CA bundle from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.verify = False
    return session


@pytest.fixture(scope="module")
def reader():
    """A read-only API token for this module, created on the lab and revoked after it."""
    name = f"test-balancer-ro-{uuid.uuid4().hex[:8]}"
    token = f"ro-{uuid.uuid4().hex}{uuid.uuid4().hex}"

    def kv_token(*args: str, stdin: str | None = None) -> str:
        p = subprocess.run(["docker", "exec", "-i", "kvlab-app1", "kv-manage", "kv_token", *args],
                           input=stdin, capture_output=True, text=True, timeout=90, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout.strip()

    assert kv_token("create", "--name", name, "--token-stdin", "--scopes", "read",
                    stdin=token + "\n") == "changed"
    try:
        yield token
    finally:
        kv_token("revoke", "--name", name)


def instance_name(lab, header: str) -> str:
    """X-KV-Instance as "host:port" with the inventory's host name."""
    host, _, port = header.rpartition(":")
    if host not in lab.addresses:
        host = next((h for h, a in lab.addresses.items() if a == host), host)
    return f"{host}:{port}"


def every_instance(lab) -> set[str]:
    return {f"{h}:{p}" for h in lab.app_hosts() for p in lab.app_ports}


def spread(lab, s, limits, n: int) -> dict[str, int]:
    """n sequential GETs (at half the rate limit at most): answers per instance."""
    pace = 2.0 / limits["rps"]
    seen: dict[str, int] = {}
    for _ in range(n):
        r = s.get(f"{lab.base}/api/kv/balancer-key", timeout=15)
        assert r.status_code == 200, r.text
        name = instance_name(lab, r.headers["X-KV-Instance"])
        seen[name] = seen.get(name, 0) + 1
        time.sleep(pace)
    return seen


def gets_keep_succeeding(lab, s, limits, n: int = 30) -> list[int]:
    codes = []
    for _ in range(n):
        codes.append(s.get(f"{lab.base}/api/kv/balancer-key", timeout=20).status_code)
        time.sleep(2.0 / limits["rps"])
    return codes


def back_in_the_balancer(lab, s, limits, want: set[str], timeout: float = 90) -> None:
    n = 8 * len(every_instance(lab))
    wait_until(lambda: want <= set(spread(lab, s, limits, n)),
               f"{sorted(want)} answering through the balancer", timeout=timeout, every=2)


def assert_json_error(r: requests.Response, code: str) -> None:
    """nginx's own errors look like the app's: JSON {"error", "detail"} with the usual headers."""
    assert r.headers["Content-Type"] == "application/json", (r.status_code, r.headers, r.text)
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert body["detail"]
    assert "<html" not in r.text
    assert len(r.headers.get("X-Request-ID", "")) >= 16
    if r.url.startswith("https://"):
        assert "Strict-Transport-Security" in r.headers


@pytest.fixture(scope="module", autouse=True)
def the_key(lab, s):
    """The key the spread and fault checks read."""
    r = s.put(f"{lab.base}/api/kv/balancer-key", json={"value": "spread"}, timeout=15)
    assert r.status_code in (200, 201), r.text


# ------------------------------------------------------------------ the front door


def test_http_redirects_to_https(lab):
    host = lab.addresses["lb1"]
    r = plain().get(f"http://{host}/api/kv/x?y=1", allow_redirects=False, timeout=10)
    assert r.status_code == 301
    assert r.headers["Location"] == f"https://{host}/api/kv/x?y=1"


def test_read_only_token_reads_what_the_writer_wrote(lab, s, reader):
    """(No token, a bad token on a write and the read-only token's 403: test_e2e.py.)"""
    value = {"text": "héllo", "n": [1, 2, 3]}
    r = s.put(f"{lab.base}/api/kv/balancer-ro-key", json={"value": value}, timeout=15)
    assert r.status_code in (200, 201), r.text
    r = plain().get(f"{lab.base}/api/kv/balancer-ro-key", timeout=15,
                    headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 200 and r.json()["value"] == value, r.text
    assert "Strict-Transport-Security" in r.headers
    r = plain().get(f"{lab.base}/api/kv/balancer-ro-key", timeout=15,
                    headers={"Authorization": "Bearer not-a-valid-token-0000000000"})
    assert r.status_code == 401 and r.json()["error"], r.text


def test_request_id_generated_and_the_access_log_names_the_upstream(lab, s):
    """(An incoming id kept and followed into the app's log: test_e2e.py.)"""
    r = plain().get(f"{lab.base}/healthz", timeout=10)
    assert r.status_code == 200 and len(r.headers["X-Request-ID"]) >= 16
    rid = f"balancer-{uuid.uuid4().hex}"
    r = s.put(f"{lab.base}/api/kv/balancer-rid-key", json={"value": "rid"}, timeout=15,
              headers={"X-Request-ID": rid})
    assert r.status_code in (200, 201), r.text
    assert r.headers["X-Request-ID"] == rid

    def logged():
        p = harness.dexec("lb1", "grep", "-F", rid, "/var/log/nginx/kv_access.json",
                          check=False, timeout=20)
        return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]

    entry = wait_until(logged, "the access log line", timeout=15, every=0.5)[-1]
    assert entry["status"] in ("200", "201", 200, 201) and entry["request_id"] == rid, entry
    assert entry["upstream_addr"] and float(entry["request_time"]) >= 0, entry
    assert entry["upstream_response_time"], entry


def test_internal_endpoints_not_public(lab, s):
    for path in ("/metrics", "/metrics/", "/nginx_status"):
        r = s.get(lab.base + path, timeout=10)
        assert r.status_code == 404, path
        assert "python_info" not in r.text and "Active connections" not in r.text


def test_nginx_errors_are_json(lab, s):
    base = lab.base
    # 404 from nginx itself, whatever the extension says
    for path in ("/metrics", "/nginx_status", "/metrics/page.html"):
        r = plain().get(base + path, timeout=10)
        assert r.status_code == 404, path
        assert_json_error(r, "not_found")
    # 405: nginx refuses TRACE itself; Allow lists what the app serves on that path
    for path, allow in (
        ("/api/kv/some-key", "GET, PUT, DELETE, HEAD, OPTIONS"),
        ("/api/kv/", "GET, POST, HEAD, OPTIONS"),
        ("/healthz", "GET, HEAD, OPTIONS"),
    ):
        r = s.request("TRACE", base + path, timeout=10)
        assert r.status_code == 405, (path, r.status_code, r.text)
        assert_json_error(r, "method_not_allowed")
        assert r.headers["Allow"] == allow
    # the app's own 405 keeps its Allow and its JSON
    r = s.request("PATCH", f"{base}/api/kv/some-key", timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, PUT, DELETE, HEAD, OPTIONS"
    assert r.json()["error"] == "method_not_allowed"
    # 414 and a header block too large (400)
    r = s.get(f"{base}/api/kv/{'k' * 9000}", timeout=10)
    assert r.status_code == 414
    assert_json_error(r, "uri_too_long")
    # below nginx's limit, above gunicorn's defaults: the app answers (JSON), never gunicorn
    r = s.get(f"{base}/api/kv/{'k' * 5000}", timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "bad_key", r.text
    r = s.get(f"{base}/healthz", headers={"X-Big": "b" * 9000}, timeout=10)
    assert r.status_code == 400
    assert_json_error(r, "bad_request")
    # plain HTTP to the TLS port
    r = plain().get(f"http://{lab.addresses['lb1']}:443/healthz", timeout=10)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["error"] == "bad_request"


def test_body_above_limit_gets_413(lab, s, limits):
    big = "x" * (limits["max_body"] + 8192)
    body = json.dumps({"value": big}).encode()
    headers = {"Content-Type": "application/json"}
    r = s.put(f"{lab.base}/api/kv/too-big", data=body, timeout=30, headers=headers)
    assert r.status_code == 413
    assert_json_error(r, "value_too_large")
    # chunked (no Content-Length): nginx finds out while reading the body, in @kv_write
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    r = s.put(f"{lab.base}/api/kv/too-big", data=chunks, timeout=30, headers=headers)
    assert r.status_code == 413
    assert_json_error(r, "value_too_large")
    assert s.get(f"{lab.base}/api/kv/too-big", timeout=10).status_code == 404


def test_burst_gets_429(lab, limits):
    """Three times the burst plus a second of the rate, at once: nginx answers the excess with its
    JSON 429 at once, and everything else is served. curl multiplexes them over HTTP/2
    (Python threads would not outrun the lab's rate limit on a small machine)."""
    n = 3 * (limits["burst"] + limits["rps"])
    with tempfile.TemporaryDirectory(prefix="kv-burst-") as out:
        p = subprocess.run(
            ["curl", "-sk", "--http2", "--parallel", "--parallel-max", "64", "--noproxy", "*",
             "-o", f"{out}/#1", "-w",
             "%{url_effective}\\t%{http_code}\\t%header{content-type}\\t%header{retry-after}"
             "\\t%header{x-request-id}\\t%header{strict-transport-security}\\n",
             f"{lab.base}/healthz?n=[1-{n}]"],
            capture_output=True, text=True, timeout=120, check=False)
        assert p.returncode == 0, p.stderr[-2000:]
        rows = [line.split("\t") for line in p.stdout.splitlines() if line.strip()]
        assert len(rows) == n, p.stdout[-2000:]
        codes = [int(r[1]) for r in rows]
        print("burst statuses:", {c: codes.count(c) for c in set(codes)})
        assert set(codes) <= {200, 429}, {c: codes.count(c) for c in set(codes)}
        assert codes.count(200) >= limits["burst"], "the burst was not served in full"
        limited = next((r for r in rows if r[1] == "429"), None)
        assert limited is not None, f"no 429 in {n} requests at once"
        url, _, ctype, retry, rid, hsts = limited
        body = json.loads(Path(out, url.rpartition("=")[2]).read_text())
    assert ctype == "application/json" and retry == "1", limited
    assert len(rid) >= 16 and hsts.startswith("max-age="), limited
    assert set(body) == {"error", "detail"} and body["error"] == "rate_limited", body
    time.sleep(limits["burst"] / limits["rps"] + 1)  # the bucket refills for the tests after


# ------------------------------------------------------------------ instances and hosts down


def test_requests_spread_over_every_instance(lab, s, limits):
    seen = spread(lab, s, limits, 8 * len(every_instance(lab)))
    print("spread over instances:", seen)
    assert set(seen) == every_instance(lab)


def test_every_instance_down_gets_json_502(lab, s, limits):
    units = [f"kv@{p}" for p in lab.app_ports]
    try:
        for host in lab.app_hosts():
            harness.dexec(host, "systemctl", "stop", *units, timeout=90)
        r = s.get(f"{lab.base}/api/kv/balancer-key", timeout=30)
        assert r.status_code == 502, r.text
        assert_json_error(r, "upstream_unavailable")
        r = s.put(f"{lab.base}/api/kv/balancer-key", json={"value": 1}, timeout=30)
        assert r.status_code == 502, r.text
        assert_json_error(r, "upstream_unavailable")
    finally:
        for host in lab.app_hosts():
            harness.dexec(host, "systemctl", "start", *units, timeout=120, check=False)
        for host in lab.app_hosts():
            lab.wait_instances(host, timeout=120)
        back_in_the_balancer(lab, s, limits, every_instance(lab))
        lab.wait_healthy(why="after every instance was stopped")


def test_one_instance_down(lab, s, limits):
    port = lab.app_ports[0]
    try:
        harness.dexec("app1", "systemctl", "stop", f"kv@{port}", timeout=90)
        codes = gets_keep_succeeding(lab, s, limits)
        assert codes == [200] * len(codes), codes
    finally:
        harness.dexec("app1", "systemctl", "start", f"kv@{port}", timeout=90, check=False)
        lab.wait_instances("app1")
        back_in_the_balancer(lab, s, limits, {f"app1:{port}"})


def test_one_app_host_down(lab, s, limits):
    host = lab.app_hosts()[-1]
    try:
        harness.run(["docker", "stop", "-t", "10", f"kvlab-{host}"], timeout=60)
        t0 = time.monotonic()
        codes = gets_keep_succeeding(lab, s, limits)
        print(f"with {host} stopped: {len(codes)} GETs in {time.monotonic() - t0:.1f}s")
        assert codes == [200] * len(codes), codes
    finally:
        harness.run(["docker", "start", f"kvlab-{host}"], timeout=60, check=False)
        lab.wait_instances(host, timeout=180)
        back_in_the_balancer(lab, s, limits, {f"{host}:{p}" for p in lab.app_ports})
        lab.wait_healthy(why=f"after {host} was stopped")
    got = harness.dexec(host, "hostname", "-I", timeout=20).stdout.split()
    assert lab.addresses[host] in got, f"{host} came back with other addresses: {got}"


# ------------------------------------------------------------------ releases under load


def releases(lab) -> dict[str, tuple[str, str]]:
    """(current, previous) release of every app host."""
    out = {}
    for host in lab.app_hosts():
        links = harness.dexec(host, "readlink", "/opt/kv/current", "/opt/kv/previous",
                              timeout=20, check=False).stdout.split()
        current, previous = [*links, "", ""][:2]
        out[host] = (current, previous)
    return out


def under_load(lab, playbook: str, extra: list[str] | None = None) -> None:
    load = harness.Load(lab.base, lab.writer, threads=4, rate=8.0, max_seconds=1500).start()
    try:
        time.sleep(3)
        t0 = time.monotonic()
        harness.playbook(playbook, timeout=480, extra=extra)
        print(f"{playbook}: {time.monotonic() - t0:.0f}s")
        time.sleep(3)
    finally:
        load.stop()
    print(f"{playbook} under load: {load.summary()}")
    assert load.sent > 100, load.summary()
    assert load.failures == [], load.failures[:20]


def test_rolling_update_and_rollback_under_load_fail_no_request(lab, tmp_path):
    before = releases(lab)
    assert all(current for current, _ in before.values()), before
    # a new version of the app: the same tree with one changed file (the same every run, so the
    # lab keeps two releases however often this runs)
    src = tmp_path / "app"
    shutil.copytree(harness.ROOT / "app", src, ignore=shutil.ignore_patterns(
        ".venv", "__pycache__", "tests", ".*cache"))
    with open(src / "kvsite" / "__init__.py", "a") as f:
        f.write("# rolling update marker of tests/stack/test_balancer.py\n")
    rolled_back = False
    try:
        under_load(lab, "rolling_update.yml", ["-e", f"django_kv_app_src={src}"])
        updated = releases(lab)
        for host, (current, previous) in updated.items():
            assert current != before[host][0], f"{host} did not get the new release"
            assert previous == before[host][0], f"{host} does not keep the old one as previous"
        under_load(lab, "rollback.yml")
        rolled_back = True
        after = releases(lab)
        assert {h: c for h, (c, _) in after.items()} == {h: c for h, (c, _) in before.items()}
    finally:
        if not rolled_back:
            # the lab's own release again, from this checkout's app (as `make lab` deployed it)
            harness.playbook("rolling_update.yml", timeout=480)
        for host in lab.app_hosts():
            lab.wait_instances(host)
        lab.wait_healthy(why="after the rolling update and rollback")
