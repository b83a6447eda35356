"""Every endpoint and status of docs/api.md, through Django's test client on the real cluster."""

import json
import threading

from tests.conftest import make_client, refresh_nodes, unique


def put(client, key, value, **kw):
    query = kw.pop("query", "")
    return client.put(f"/api/kv/{key}{query}", json.dumps({"value": value}),
                      content_type="application/json", **kw)


def test_put_create_then_replace_and_versions_increase(client):
    key = unique()
    r1 = put(client, key, 1)
    assert r1.status_code == 201
    body = r1.json()
    assert body["key"] == key and body["value"] == 1
    assert r1["ETag"] == f'"{body["version"]}"'
    assert r1["X-KV-Token"]
    assert r1["X-KV-Instance"] == "testhost:8000"
    r2 = put(client, key, {"nested": [1, "two", None, True]})
    assert r2.status_code == 200
    assert int(r2.json()["version"]) > int(body["version"])


def test_every_read_level_sees_a_quorum_write(client):
    key = unique()
    v = put(client, key, "x").json()["version"]
    for q in ("", "?r=quorum", "?r=primary", "?r=one", "?r=one&max_lag=30"):
        r = client.get(f"/api/kv/{key}{q}")
        assert r.status_code == 200, (q, r.content)
        assert r.json() == {"key": key, "value": "x", "version": v}
        assert r["ETag"] == f'"{v}"'
        assert r["X-KV-Node"] in ("p1", "s1", "s2")


def test_primary_read_is_served_by_primary(client):
    key = unique()
    put(client, key, 1, query="?w=one")
    assert client.get(f"/api/kv/{key}?r=primary")["X-KV-Node"] == "p1"


def test_w_one_write(client):
    key = unique()
    r = put(client, key, 7, query="?w=one")
    assert r.status_code == 201
    assert client.get(f"/api/kv/{key}?r=primary").json()["value"] == 7


def test_session_token_read_your_writes(client):
    key = unique()
    for i in range(5):
        r = put(client, key, i, query="?w=one")
        token = r["X-KV-Token"]
        g = client.get(f"/api/kv/{key}?r=one", headers={"X-KV-Token": token})
        assert g.status_code == 200
        assert g.json()["value"] == i


def test_get_absent_is_404(client):
    r = client.get(f"/api/kv/{unique()}")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert r["Content-Type"] == "application/json"


def test_delete_then_absent_everywhere(client):
    key = unique()
    put(client, key, 1)
    r = client.delete(f"/api/kv/{key}")
    assert r.status_code == 204
    assert r["X-KV-Token"]
    for q in ("", "?r=primary"):
        assert client.get(f"/api/kv/{key}{q}").status_code == 404
    # r=one may ask the standby outside the write's quorum (documented staleness): with the
    # delete's session token it must not
    one = client.get(f"/api/kv/{key}?r=one", headers={"X-KV-Token": r["X-KV-Token"]})
    assert one.status_code == 404
    assert client.delete(f"/api/kv/{key}").status_code == 404
    # re-creating a deleted key is a creation
    assert put(client, key, 2).status_code == 201


def test_post_creates_and_conflicts(client):
    key = unique()
    r = client.post("/api/kv/", {"key": key, "value": [1]}, content_type="application/json")
    assert r.status_code == 201
    assert r.json()["value"] == [1]
    r = client.post("/api/kv/", {"key": key, "value": 2}, content_type="application/json")
    assert r.status_code == 409
    assert r.json()["error"] == "exists"


def test_if_match(client):
    key = unique()
    v1 = put(client, key, 1).json()["version"]
    assert put(client, key, 2, headers={"If-Match": '"1"'}).status_code == 412
    r = put(client, key, 2, headers={"If-Match": f'"{v1}"'})
    assert r.status_code == 200
    v2 = r.json()["version"]
    assert put(client, key, 3, headers={"If-Match": f'"{v1}"'}).status_code == 412
    assert client.delete(f"/api/kv/{key}", headers={"If-Match": f'"{v1}"'}).status_code == 412
    assert client.delete(f"/api/kv/{key}", headers={"If-Match": f'"{v2}"'}).status_code == 204
    assert put(client, key, 4, headers={"If-Match": "*"}).status_code == 412
    assert put(client, unique(), 4, headers={"If-Match": f'"{v2}"'}).status_code == 412


def test_if_none_match_star(client):
    key = unique()
    assert put(client, key, 1, headers={"If-None-Match": "*"}).status_code == 201
    r = put(client, key, 2, headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert r.json()["error"] == "precondition_failed"
    assert client.get(f"/api/kv/{key}").json()["value"] == 1


def test_concurrent_if_match_writers_exactly_one_wins(client):
    key = unique()
    v = put(client, key, "start").json()["version"]
    results = []
    barrier = threading.Barrier(8)

    def writer(i):
        c = make_client("rw")
        barrier.wait(timeout=10)
        r = put(c, key, f"writer-{i}", headers={"If-Match": f'"{v}"'})
        results.append((r.status_code, i))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    codes = sorted(code for code, _ in results)
    assert codes == [200] + [412] * 7, results
    winner = next(i for code, i in results if code == 200)
    assert client.get(f"/api/kv/{key}?r=quorum").json()["value"] == f"writer-{winner}"


def test_cluster_endpoint(client):
    refresh_nodes()
    r = client.get("/api/cluster")
    assert r.status_code == 200
    body = r.json()
    assert body["primary"] == "p1"
    assert (body["n"], body["k"], body["w"], body["r"]) == (3, 1, 2, 2)
    assert body["timeline"] >= 1
    assert set(body["nodes"]) == {"p1", "s1", "s2"}
    assert body["nodes"]["s1"]["role"] == "standby"
    assert body["nodes"]["s1"]["sync_state"] == "quorum"
    assert body["nodes"]["p1"]["role"] == "primary"


def test_health_and_readiness_need_no_token():
    c = make_client(None)
    assert c.get("/healthz").status_code == 200
    refresh_nodes()
    r = c.get("/readyz")
    assert r.status_code == 200, r.content
    assert r.json()["ready"] is True
    m = c.get("/metrics")
    assert m.status_code == 200
    assert b"kv_quorum_operations_total" in m.content


def test_schema(client):
    r = client.get("/api/schema/?format=json")
    assert r.status_code == 200
    schema = json.loads(r.content)
    assert "/api/kv/{key}" in schema["paths"]
    assert make_client(None).get("/api/schema/").status_code == 401


def test_request_id_is_echoed(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r["X-Request-ID"] == "abc-123"
    r = client.get("/healthz", headers={"X-Request-ID": "bad id\n"})
    assert r["X-Request-ID"] != "bad id\n" and len(r["X-Request-ID"]) == 32


def test_access_log_by_default_for_writes_and_failed_or_slow_reads(caplog):
    from django.conf import settings
    from django.test import override_settings

    caplog.set_level("INFO", logger="kv.access")
    assert settings.KV["ACCESS_LOG"] == "writes"  # the default (KV_ACCESS_LOG unset)
    key = unique()
    rw = make_client("rw")
    assert rw.put(f"/api/kv/{key}?w=quorum", {"value": 1},
                  content_type="application/json").status_code == 201
    lines = [r for r in caplog.records if r.name == "kv.access"]
    assert [(r.ecs["http.request.method"], r.ecs["http.response.status_code"], r.ecs["kv.level"])
            for r in lines] == [("PUT", 201, "quorum")]
    assert lines[0].ecs["user.name"] and "event.duration" in lines[0].ecs
    caplog.clear()
    assert rw.get(f"/api/kv/{key}?r=primary").status_code == 200
    assert rw.get("/healthz").status_code == 200
    assert not [r for r in caplog.records if r.name == "kv.access"]
    assert rw.get(f"/api/kv/{unique()}?r=primary").status_code == 404
    assert make_client(None).get(f"/api/kv/{key}").status_code == 401
    lines = [r for r in caplog.records if r.name == "kv.access"]
    assert [r.ecs["http.response.status_code"] for r in lines] == [404, 401]
    assert lines[0].ecs["kv.level"] == "primary" and lines[0].ecs["user.name"]
    for mode, slow in (("writes", 0.0), (True, 0.5)):  # a slow read; every request
        caplog.clear()
        with override_settings(KV={**settings.KV, "ACCESS_LOG": mode, "ACCESS_LOG_SLOW": slow}):
            assert make_client("rw").get(f"/api/kv/{key}?r=primary").status_code == 200
        lines = [r for r in caplog.records if r.name == "kv.access"]
        assert len(lines) == 1 and lines[0].ecs["http.response.status_code"] == 200, mode
        assert lines[0].ecs["kv.level"] == "primary" and "event.duration" in lines[0].ecs


def test_bare_view_of_the_benchmark(client):
    """bench/kvbench's bare view (the benchmark's baseline) on the app's stack; without its URL
    configuration, which only a benchmark run installs, the path does not exist."""
    from django.test import override_settings

    key = unique()
    v = put(client, key, {"b": 1}).json()["version"]
    assert make_client(None).get(f"/bench/bare/{key}").status_code == 404
    with override_settings(ROOT_URLCONF="kvbench.urls"):
        r = make_client(None).get(f"/bench/bare/{key}")
        assert r.status_code == 200
        assert r.json() == {"key": key, "value": {"b": 1}, "version": v}
        assert make_client(None).get(f"/bench/bare/{unique()}").status_code == 404


def test_metrics_count_outcomes(client):
    from kv.metrics import QUORUM_OPERATIONS

    def value():
        return QUORUM_OPERATIONS.labels(op="read", level="one", outcome="ok")._value.get()

    before = value()
    key = unique()
    put(client, key, 1)
    for _ in range(3):
        client.get(f"/api/kv/{key}?r=one")
    assert value() == before + 3
