"""Standbys stopped, stalled or lagging: what each consistency level does."""

import json
import time

from tests.conftest import refresh_nodes, unique


def put(client, key, value, query=""):
    return client.put(f"/api/kv/{key}{query}", json.dumps({"value": value}),
                      content_type="application/json")


def wait_for(predicate, timeout=10.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_one_standby_stopped_quorum_still_works(client, restore):
    cluster = restore
    cluster.stop(cluster.node("s1"))
    assert wait_for(lambda: "s1" not in cluster.streaming())
    state = refresh_nodes()
    assert not state.nodes["s1"].eligible
    key = unique()
    r = put(client, key, "one-down")
    assert r.status_code == 201, r.content
    for _ in range(10):
        g = client.get(f"/api/kv/{key}")
        assert g.status_code == 200 and g.json()["value"] == "one-down"
        assert g["X-KV-Node"] in ("p1", "s2")
        g = client.get(f"/api/kv/{key}?r=one")
        assert g.status_code == 200 and g["X-KV-Node"] == "s2"
    assert client.get("/readyz").status_code == 200


def test_stale_cache_still_reaches_quorum(client, restore):
    """The node cache still lists a standby that just died: the read replaces it."""
    cluster = restore
    key = unique()
    put(client, key, 1)
    refresh_nodes()
    cluster.stop(cluster.node("s2"))
    for _ in range(5):
        g = client.get(f"/api/kv/{key}")
        assert g.status_code == 200, g.content


def test_both_standbys_stopped(client, restore):
    cluster = restore
    cluster.stop(cluster.node("s1"))
    cluster.stop(cluster.node("s2"))
    assert wait_for(lambda: not cluster.streaming())
    refresh_nodes()
    key = unique()
    started = time.monotonic()
    r = put(client, key, "never")
    elapsed = time.monotonic() - started
    assert r.status_code == 503, r.content
    body = r.json()
    assert body["error"] == "quorum_unavailable"
    assert body["needed"] == 2 and body["got"] == 1
    assert "committed_locally" not in body
    assert set(body["nodes"]) == {"p1", "s1", "s2"}
    assert elapsed < 1.0, "a quorum write must fail fast, not wait for the deadline"
    assert client.get(f"/api/kv/{key}?r=primary").status_code == 404  # nothing was written
    assert client.delete(f"/api/kv/{key}").status_code == 503
    # w=one still works, and r=primary sees it
    assert put(client, key, "local", "?w=one").status_code == 201
    assert client.get(f"/api/kv/{key}?r=primary").json()["value"] == "local"
    # r=one falls back to the primary; r=quorum cannot get R=2 answers
    assert client.get(f"/api/kv/{key}?r=one")["X-KV-Node"] == "p1"
    g = client.get(f"/api/kv/{key}")
    assert g.status_code == 503
    assert g.json()["needed"] == 2 and g.json()["got"] == 1
    assert g.json()["nodes"]["p1"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"] == "not_ready"


def test_stalled_standbys_hit_the_deadline(client, restore):
    """Standbys stream but do not apply: the commit waits, the deadline cancels the wait, and
    the answer says the write is committed on the primary only."""
    from kv.metrics import QUORUM_OPERATIONS

    cluster = restore
    for name in ("s1", "s2"):
        cluster.sql(cluster.node(name), "SELECT pg_wal_replay_pause()")
    refresh_nodes()
    indeterminate = QUORUM_OPERATIONS.labels(op="write", level="quorum", outcome="indeterminate")
    before = indeterminate._value.get()
    key = unique()
    started = time.monotonic()
    r = put(client, key, "maybe")
    elapsed = time.monotonic() - started
    assert r.status_code == 503, r.content
    body = r.json()
    assert body["committed_locally"] is True
    assert body["error"] == "quorum_unavailable"
    assert 1.4 < elapsed < 5, elapsed
    assert indeterminate._value.get() == before + 1
    # the primary has it (the outcome is indeterminate, not failed)
    g = client.get(f"/api/kv/{key}?r=primary")
    assert g.status_code == 200 and g.json()["value"] == "maybe"
    assert g.json()["version"] == body["version"]
    # w=one does not wait for standbys
    assert put(client, unique(), 1, "?w=one").status_code == 201


def test_r_one_avoids_a_lagging_standby(client, restore):
    cluster = restore
    cluster.sql(cluster.node("s1"), "SELECT pg_wal_replay_pause()")
    key = unique()
    assert put(client, key, 0).status_code == 201
    time.sleep(0.7)
    for i in range(1, 4):
        assert put(client, key, i).status_code == 200  # s2 applies: ANY 1 is met

    def s1_lagging():
        s = refresh_nodes().nodes["s1"]
        return s.lag_seconds is not None and s.lag_seconds > 0.5

    assert wait_for(s1_lagging), refresh_nodes().nodes["s1"]
    served = set()
    for _ in range(20):
        g = client.get(f"/api/kv/{key}?r=one&max_lag=0.5")
        assert g.status_code == 200
        assert g.json()["value"] == 3
        served.add(g["X-KV-Node"])
    assert "s1" not in served
    # with a generous max_lag the lagging standby may serve (stale) reads
    # (s1 stopped replaying before the key was created: from s1 it is absent)
    stale = {client.get(f"/api/kv/{key}?r=one&max_lag=3600").json().get("value")
             for _ in range(20)}
    assert stale <= {None, 0, 1, 2, 3}
    # a session token never reads from a standby that has not replayed the write
    token = put(client, key, 4)["X-KV-Token"]
    for _ in range(10):
        g = client.get(f"/api/kv/{key}?r=one&max_lag=3600", headers={"X-KV-Token": token})
        assert g.json()["value"] == 4 and g["X-KV-Node"] != "s1"
    # a quorum read always sees the last quorum write, even from the lagging node's pair
    for _ in range(10):
        assert client.get(f"/api/kv/{key}").json()["value"] == 4


def test_r_one_avoids_a_stopped_standby(client, restore):
    cluster = restore
    key = unique()
    put(client, key, "v")
    refresh_nodes()
    cluster.stop(cluster.node("s2"))
    for _ in range(10):
        g = client.get(f"/api/kv/{key}?r=one")
        assert g.status_code == 200 and g["X-KV-Node"] in ("s1", "p1")


def test_quorum_read_after_delete_never_resurrects_the_key(client, restore):
    """A standby that has not replayed a delete still holds the old row; the tombstone's higher
    version must win every quorum read (a missing row would lose against the stale copy)."""
    cluster = restore
    key = unique()
    assert put(client, key, "alive").status_code == 201
    cluster.wait_streaming(2)
    # let both standbys apply the creation, then freeze s1
    for name in ("s1", "s2"):
        assert wait_for(lambda n=name: cluster.sql(
            cluster.node(n), "SELECT count(*) FROM kv_item WHERE key = %s", [key])[0][0] == 1)
    cluster.sql(cluster.node("s1"), "SELECT pg_wal_replay_pause()")
    assert client.delete(f"/api/kv/{key}").status_code == 204  # s2 applies: ANY 1 is met
    assert cluster.sql(cluster.node("s1"), "SELECT deleted FROM kv_item WHERE key = %s",
                       [key]) == [(False,)]
    nodes_seen = set()
    for _ in range(30):
        g = client.get(f"/api/kv/{key}")
        assert g.status_code == 404, g.content
        nodes_seen.add(g["X-KV-Node"])
    assert nodes_seen <= {"p1", "s2"}


def test_reads_survive_a_stopped_primary(client, restore):
    """With the primary down the standbys stop streaming, but this process saw them streaming
    on the newest timeline since their last restart: quorum reads and listings go on; writes
    fail with 503."""
    cluster = restore
    ns = unique("nopri") + "/"
    for i in range(5):
        assert put(client, f"{ns}{i}", i).status_code == 201
    assert client.delete(f"/api/kv/{ns}1").status_code == 204
    cluster.wait_streaming(2)
    refresh_nodes()  # both standbys verified streaming on the current timeline
    cluster.stop(cluster.node("p1"))
    state = refresh_nodes()
    assert state.primary is None
    assert set(state.eligible()) == {"s1", "s2"}, state.public()
    for _ in range(5):
        g = client.get(f"/api/kv/{ns}3")
        assert g.status_code == 200 and g.json()["value"] == 3
        assert g["X-KV-Node"] in ("s1", "s2")
        assert client.get(f"/api/kv/{ns}1").status_code == 404
    page = client.get("/api/kv/", {"prefix": ns, "limit": "10"})
    assert page.status_code == 200, page.content
    assert [i["key"] for i in page.json()["items"]] == [f"{ns}{i}" for i in (0, 2, 3, 4)]
    assert client.get(f"/api/kv/{ns}3?r=primary").status_code == 503
    w = put(client, f"{ns}9", 9)
    assert w.status_code == 503 and w.json()["error"] == "quorum_unavailable"
    assert client.get("/readyz").status_code == 503


def test_r_one_listing_falls_back_to_the_primary(client, restore):
    """No standby left: an r=one listing goes to the primary."""
    from kv.selection import kv_read_node

    cluster = restore
    key = unique("fallback")
    assert put(client, key, "x").status_code == 201
    cluster.stop(cluster.node("s1"))
    cluster.stop(cluster.node("s2"))
    assert wait_for(lambda: not cluster.streaming())
    refresh_nodes()
    assert kv_read_node() == "p1"
    r = client.get("/api/kv/", {"prefix": key, "r": "one"})
    assert r.status_code == 200, r.content
    assert [i["key"] for i in r.json()["items"]] == [key]


def _purge(*args) -> str:
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("kv_purge_tombstones", *args, stdout=out)
    return out.getvalue()


def _rows(cluster, node, key):
    return cluster.sql(cluster.node(node), "SELECT deleted FROM kv_item WHERE key = %s", [key])


def test_purged_tombstone_never_lets_a_returning_standby_resurrect_the_key(client, restore):
    """s1 holds the live row and is down while the key is deleted and the tombstones are
    purged. When it comes back it streams, so quorum reads ask it, before it has replayed the
    delete (held there with recovery_min_apply_delay, the catch-up window made deterministic).
    Its old row must never win: the purge holds back while any node has not replayed the
    tombstone, and purges once every node has."""
    cluster = restore
    s1 = cluster.node("s1")
    key = unique("purge")
    assert put(client, key, "alive").status_code == 201
    for name in ("s1", "s2"):
        assert wait_for(lambda n=name: _rows(cluster, n, key) == [(False,)])
    cluster.stop(s1)
    assert wait_for(lambda: "s1" not in cluster.streaming())
    assert client.delete(f"/api/kv/{key}").status_code == 204
    # an old tombstone: beyond any horizon
    cluster.sql(cluster.primary, "UPDATE kv_item SET updated_at = '2000-01-01' WHERE key = %s",
                [key])
    out = _purge("--older-than", "60", "--wait", "1")
    assert _rows(cluster, "p1", key) == [(True,)], out
    assert "held back" in out and "s1" in out, out
    try:
        with open(f"{s1.datadir}/postgresql.auto.conf", "a") as fh:
            fh.write("\nrecovery_min_apply_delay = '1h'\n")
        cluster.start(s1)
        cluster.wait_streaming(2)
        assert _rows(cluster, "s1", key) == [(False,)]  # streaming, the delete not replayed
        assert refresh_nodes().nodes["s1"].eligible
        codes = [client.get(f"/api/kv/{key}").status_code for _ in range(24)]
        assert codes == [404] * 24, codes
        out = _purge("--older-than", "60", "--wait", "0.5")
        assert "held back" in out and "s1" in out and "behind" in out, out
        assert _rows(cluster, "p1", key) == [(True,)]
    finally:
        cluster.sql(s1, "ALTER SYSTEM RESET recovery_min_apply_delay")
        cluster.sql(s1, "SELECT pg_reload_conf()")
    # caught up: the purge goes ahead and every node ends with no row
    assert wait_for(lambda: _rows(cluster, "s1", key) == [(True,)])
    out = _purge("--older-than", "60")
    assert out.splitlines()[-1].startswith("changed"), out
    for name in ("p1", "s1", "s2"):
        assert wait_for(lambda n=name: _rows(cluster, n, key) == []), name
    codes = [client.get(f"/api/kv/{key}").status_code for _ in range(12)]
    assert codes == [404] * 12, codes
