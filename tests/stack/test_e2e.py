"""End to end through the balancer: the API contract (docs/api.md), metrics in Prometheus, and
one request followed through nginx's access log and the app's log by its X-Request-ID."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from tests.lab_monitoring import lab_monitoring

from . import harness

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def s(lab):
    with lab.session() as session:
        yield session


@pytest.fixture
def key():
    return f"e2e-{uuid.uuid4().hex[:10]}"


def _until(fn, timeout: float = 15, every: float = 0.3):
    """Call ``fn`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    return last


def test_write_with_token_then_read_at_every_level(lab, s, key):
    r = s.put(f"{lab.base}/api/kv/{key}", json={"value": {"n": 1}}, timeout=15)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["key"] == key and body["value"] == {"n": 1}
    version = body["version"]
    assert r.headers["ETag"] == f'"{version}"'
    token = r.headers.get("X-KV-Token")
    assert token, "a successful write returns X-KV-Token"
    assert r.headers.get("X-KV-Instance"), "every response names its instance"

    r = s.put(f"{lab.base}/api/kv/{key}", params={"w": "quorum"}, json={"value": {"n": 2}},
              timeout=15)
    assert r.status_code == 200, r.text
    v2 = int(r.json()["version"])
    assert v2 > int(version)
    token = r.headers["X-KV-Token"]

    for level in ("quorum", "primary"):
        r = s.get(f"{lab.base}/api/kv/{key}", params={"r": level}, timeout=10)
        assert r.status_code == 200, (level, r.text)
        assert r.json()["value"] == {"n": 2} and int(r.json()["version"]) == v2, level
    r = s.get(f"{lab.base}/api/kv/{key}", headers={"X-KV-Token": token}, timeout=10)
    assert r.status_code == 200 and r.json()["value"] == {"n": 2}, r.text
    # r=one may lag; it converges (bounded)
    got = _until(lambda: (lambda r: r.status_code == 200 and r.json()["value"] == {"n": 2})(
        s.get(f"{lab.base}/api/kv/{key}", params={"r": "one"}, timeout=10)))
    assert got, "r=one never saw the write"

    r = s.put(f"{lab.base}/api/kv/{key}", params={"w": "one"}, json={"value": "three"},
              timeout=15)
    assert r.status_code == 200, r.text
    r = s.get(f"{lab.base}/api/kv/{key}", params={"r": "primary"}, timeout=10)
    assert r.json()["value"] == "three"

    r = s.delete(f"{lab.base}/api/kv/{key}", timeout=15)
    assert r.status_code == 204, r.text
    r = s.get(f"{lab.base}/api/kv/{key}", params={"r": "quorum"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_list_with_prefix_and_cursor(lab, s):
    prefix = f"e2e-list-{uuid.uuid4().hex[:8]}/"
    keys = [f"{prefix}{i:02d}" for i in range(5)]
    for k in reversed(keys):
        assert s.put(f"{lab.base}/api/kv/{k}", json={"value": k}, timeout=15).status_code == 201
    s.put(f"{lab.base}/api/kv/{prefix[:-1]}-outside", json={"value": 0}, timeout=15)
    seen, cursor, pages = [], None, 0
    while pages < 10:
        params = {"prefix": prefix, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = s.get(f"{lab.base}/api/kv/", params=params, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 2
        seen += [i["key"] for i in body["items"]]
        pages += 1
        cursor = body["next"]
        if not cursor:
            break
    assert seen == keys, "every key under the prefix, in key order, once"
    assert pages == 3


def test_compare_and_set(lab, s, key):
    r = s.put(f"{lab.base}/api/kv/{key}", headers={"If-None-Match": "*"}, json={"value": 1},
              timeout=15)
    assert r.status_code == 201, r.text
    etag = r.headers["ETag"]
    r = s.put(f"{lab.base}/api/kv/{key}", headers={"If-None-Match": "*"}, json={"value": 2},
              timeout=15)
    assert r.status_code == 412 and r.json()["error"] == "precondition_failed", r.text
    r = s.put(f"{lab.base}/api/kv/{key}", headers={"If-Match": etag}, json={"value": 2},
              timeout=15)
    assert r.status_code == 200, r.text
    r = s.put(f"{lab.base}/api/kv/{key}", headers={"If-Match": etag}, json={"value": 3},
              timeout=15)
    assert r.status_code == 412, "the old ETag no longer matches"
    r = s.delete(f"{lab.base}/api/kv/{key}", headers={"If-Match": etag}, timeout=15)
    assert r.status_code == 412
    assert s.get(f"{lab.base}/api/kv/{key}", params={"r": "primary"},
                 timeout=10).json()["value"] == 2


def test_auth_is_required(lab, key):
    r = requests.get(f"{lab.base}/api/kv/{key}", verify=False, timeout=10)
    assert r.status_code == 401 and r.json()["error"], r.text
    r = requests.put(f"{lab.base}/api/kv/{key}", json={"value": 1}, verify=False, timeout=10,
                     headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401, r.text
    if lab.reader:
        r = requests.put(f"{lab.base}/api/kv/{key}", json={"value": 1}, verify=False,
                         timeout=10, headers={"Authorization": f"Bearer {lab.reader}"})
        assert r.status_code == 403, "a read-only token cannot write"


def test_metrics_are_visible_in_prometheus(lab, s, key):
    mon = lab_monitoring()  # HTTPS verified with the lab's CA, basic auth
    prom = mon.prometheus
    s.put(f"{lab.base}/api/kv/{key}", json={"value": 1}, timeout=15)

    def query(q):
        r = mon.get(f"{prom}/api/v1/query", params={"query": q})
        r.raise_for_status()
        return r.json()["data"]["result"]

    targets = mon.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
    app_hosts = [h for h in lab.addresses if h.startswith("app")]
    want = {(h, p) for h in app_hosts for p in lab.app_ports}

    def instances_up():
        ts = mon.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
        up = set()
        for t in ts:
            if t["health"] != "up":
                continue
            addr = t.get("discoveredLabels", {}).get("__address__") or t["labels"]["instance"]
            host, _, port = addr.rpartition(":")
            name = next((h for h, a in lab.addresses.items() if host in (a, h)), host)
            up.add((name, int(port) if port.isdigit() else port))
        return want <= up

    assert any(t["labels"].get("job") == "kv" for t in targets), "no kv scrape job"
    assert _until(instances_up, timeout=40, every=2), f"not every app instance is up: {want}"
    assert _until(lambda: query("kv_quorum_operations_total"), timeout=40, every=2), (
        "kv_quorum_operations_total has no series in Prometheus")


def test_request_id_in_nginx_and_app_logs(lab, s, key):
    rid = f"e2e-{uuid.uuid4().hex}"
    r = s.put(f"{lab.base}/api/kv/{key}", json={"value": "logged"}, timeout=15,
              headers={"X-Request-ID": rid})
    assert r.status_code == 201, r.text
    assert r.headers.get("X-Request-ID") == rid, "nginx keeps a well-formed incoming id"
    host, _, port = r.headers["X-KV-Instance"].rpartition(":")
    if host not in lab.addresses:
        host = next(h for h, a in lab.addresses.items() if a == host)

    def grep(container_host: str, path: str):
        p = harness.dexec(container_host, "grep", "-F", rid, path, check=False, timeout=20)
        return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]

    nginx = _until(lambda: grep("lb1", "/var/log/nginx/kv_access.json"), timeout=10)
    assert nginx, "the request id is not in nginx's access log"
    assert nginx[0]["request_id"] == rid and nginx[0]["method"] == "PUT"
    app = _until(lambda: grep(host, f"/var/log/kv/kv-{port}.log"), timeout=10)
    assert app, f"the request id is not in {host}:/var/log/kv/kv-{port}.log"
    assert rid in json.dumps(app[0])
