"""The app served by real gunicorn workers: metrics aggregated across processes, JSON logs,
the instance header, raw hostile requests, concurrent conditional writers over HTTP."""

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import TOKENS, unique
from tests.live import APP_DIR, live_gunicorn


def _stale_file(metrics_dir: str) -> None:
    Path(metrics_dir, "stale.db").write_text("left over from a previous run")


@pytest.fixture(scope="module")
def server():
    with live_gunicorn({"KV_WORKERS": "3", "KV_THREADS": "2", "KV_LOG_LEVEL": "INFO"},
                       "kvgunicorn-", prepare=_stale_file) as live:
        yield live


def auth(kind="rw"):
    return {"Authorization": f"Bearer {TOKENS[kind][1]}"}


def scrape(base):
    text = requests.get(base + "/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_stale_metric_files_are_wiped_at_start(server):
    assert not Path(server["metrics"], "stale.db").exists()


def test_metrics_aggregate_across_worker_processes(server, cluster):
    base = server["base"]
    key = unique()
    requests.put(f"{base}/api/kv/{key}", json={"value": 1}, headers=auth(), timeout=10)
    cluster.wait_replayed()  # the r=one reads below may go to either standby
    label = 'kv_quorum_operations_total{level="one",op="read",outcome="ok"}'
    ok = 'django_http_responses_total_by_status_total{status="200"}'
    scraped = scrape(base)
    before, ok_before = scraped.get(label, 0.0), scraped.get(ok, 0.0)
    n = 60
    for _ in range(n):
        # a new connection each time, so the requests spread over the workers
        r = requests.get(f"{base}/api/kv/{key}?r=one",
                         headers={**auth(), "Connection": "close"}, timeout=10)
        assert r.status_code == 200
    pids = {f.split("_")[-1].split(".")[0] for f in os.listdir(server["metrics"])
            if f.startswith("counter_")}
    assert len(pids) >= 2, "requests should have reached several workers"
    after = scrape(base)
    assert after[label] - before == n
    assert any(k.startswith("kv_node_read_duration_seconds_bucket") for k in after)
    # the series the dashboards and alert rules read, summed over the workers
    assert after[ok] - ok_before >= n
    assert any(k.startswith("django_http_requests_latency_seconds_by_view_method_bucket{")
               and 'view="kv.views.KeyView"' in k for k in after)
    assert any(k.startswith("kv_replica_lag_seconds") for k in after)

    # a worker that dies keeps its counts (child_exit marks it dead; gunicorn replaces it)
    worker_pid = int(sorted(pids)[0])
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker_pid, signal.SIGKILL)
    time.sleep(1.0)
    assert scrape(base)[label] - before == n


def test_instance_header_and_json_logs(server):
    base = server["base"]
    r = requests.get(f"{base}/api/kv/{unique()}", headers={**auth(), "X-Request-ID": "req-42"},
                     timeout=10)
    assert r.status_code == 404
    assert r.headers["X-KV-Instance"] == f"127.0.0.1:{server['port']}"
    assert r.headers["X-Request-ID"] == "req-42"
    time.sleep(0.3)
    lines = [json.loads(line) for line in Path(server["log"]).read_text().splitlines()
             if line.strip()]
    assert lines, "gunicorn and the app log JSON lines"
    access = [d for d in lines if d.get("http.request.id") == "req-42"]
    assert access, lines[-5:]
    doc = access[-1]
    for field in ("@timestamp", "log.level", "message", "url.path",
                  "http.response.status_code", "event.duration", "service.node.name"):
        assert field in doc, field
    assert doc["http.response.status_code"] == 404
    assert isinstance(doc["event.duration"], int)
    assert any(d.get("log.logger", "").startswith("gunicorn") for d in lines)


def raw_request(port, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("path", [b"/api/kv/%FF", b"/api/kv/a%C3", b"/api/kv/%ED%A0%80"])
def test_invalid_utf8_path_is_400(server, path):
    token = TOKENS["rw"][1].encode()
    resp = raw_request(server["port"], b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Authorization: Bearer " + token + b"\r\nConnection: close\r\n\r\n")
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), resp[:300]
    assert json.loads(body)["error"] == "bad_key"


def test_long_request_lines_and_headers_get_json_from_the_app(server):
    """What nginx lets through (request line and each header up to 8 KiB, many headers), the
    app answers as JSON: gunicorn's own limits would answer with HTML pages (414, 431)."""
    token = TOKENS["rw"][1].encode()
    cases = [
        (b"/api/kv/" + b"k" * 8000, b"", 400, "bad_key"),
        (b"/api/kv/x?pad=" + b"p" * 8000, b"", 404, "not_found"),
        (b"/api/kv/x", b"X-Pad: " + b"h" * 8100 + b"\r\n", 404, "not_found"),
        (b"/api/kv/x", b"".join(b"X-P%d: 1\r\n" % i for i in range(300)), 404, "not_found"),
    ]
    for path, extra, status, code in cases:
        resp = raw_request(server["port"], b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Authorization: Bearer " + token + b"\r\n" + extra +
                           b"Connection: close\r\n\r\n")
        head, _, body = resp.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d" % status), resp[:300]
        assert b"application/json" in head.lower(), head
        assert json.loads(body)["error"] == code


def test_garbage_requests_never_500(server):
    token = TOKENS["rw"][1].encode()
    bodies = [b"\x00\x01\x02", b'{"value": ' + b"[" * 20000 + b"]" * 20000 + b"}",
              b'{"value": "\xff"}', b"{" * 3]
    for body in bodies:
        resp = raw_request(server["port"],
                           b"PUT /api/kv/garbage HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Authorization: Bearer " + token + b"\r\n"
                           b"Content-Type: application/json\r\nConnection: close\r\n"
                           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        status = int(resp.split(b" ", 2)[1])
        assert status == 400, resp[:300]
    huge = b'{"value": "' + b"x" * 200000 + b'"}'
    resp = raw_request(server["port"],
                       b"PUT /api/kv/garbage HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Authorization: Bearer " + token + b"\r\n"
                       b"Content-Type: application/json\r\nConnection: close\r\n"
                       b"Content-Length: " + str(len(huge)).encode() + b"\r\n\r\n" + huge)
    assert int(resp.split(b" ", 2)[1]) == 413


def test_concurrent_if_match_over_http(server):
    base = server["base"]
    key = unique()
    v = requests.put(f"{base}/api/kv/{key}", json={"value": 0}, headers=auth(),
                     timeout=10).json()["version"]
    results = []
    barrier = threading.Barrier(10)

    def writer(i):
        barrier.wait(timeout=10)
        r = requests.put(f"{base}/api/kv/{key}", json={"value": i},
                         headers={**auth(), "If-Match": f'"{v}"', "Connection": "close"},
                         timeout=20)
        results.append((r.status_code, i))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(c for c, _ in results) == [200] + [412] * 9, results
    winner = next(i for c, i in results if c == 200)
    got = requests.get(f"{base}/api/kv/{key}", headers=auth(), timeout=10).json()["value"]
    assert got == winner


def test_gunicorn_builds_no_access_log_line(monkeypatch):
    """The app logs each request itself: gunicorn's own access log must not even be built (with
    logconfig_dict set, gunicorn's stock logger formats every request's atoms, then drops them)."""
    from gunicorn.config import Config

    monkeypatch.chdir(APP_DIR)
    monkeypatch.setenv("KV_INSTANCE", os.environ.get("KV_INSTANCE", "127.0.0.1:8000"))
    cfg = Config()
    namespace = {"__file__": str(APP_DIR / "gunicorn.conf.py")}
    exec(compile((APP_DIR / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"),
         namespace)
    for name, value in namespace.items():
        if name in cfg.settings:
            cfg.set(name, value)
    log = cfg.logger_class(cfg)
    assert log.access_log_enabled is False

    class Boom:
        def __getattr__(self, name):
            raise AssertionError(f"the access log read {name}")

    log.access(Boom(), Boom(), Boom(), 0.001)  # nothing of the request is looked at
