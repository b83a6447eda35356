"""The read path under lag, a stopped WAL receiver and frozen nodes, on real PostgreSQL nodes:
a session token never lowers the requested level, r=one measures a standby's staleness from its
replay position, and every read (token lookups and listings included) answers within its bound
while a node hangs (SIGSTOP: the kernel accepts and acknowledges, nothing answers)."""

import threading
import time

import pytest

from tests.conftest import make_client, refresh_nodes, unique
from tests.test_fanout import _cluster_pids, stopped
from tests.test_faults import put, wait_for


def in_thread(fn):
    """Start ``fn`` in a thread of its own (its own Django connections, closed at its end), so
    that a request stuck on a frozen node cannot hang the test run. Returns (thread, result)."""
    result: dict = {}

    def run():
        from django.db import connections

        try:
            result["value"] = fn()
        except BaseException as exc:  # reported by the test, not lost in the thread
            result["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


@pytest.fixture
def cached_state(monkeypatch):
    """Node states taken now and kept (no probe during the test): what a worker sees right
    after a node froze, before its next probe."""
    from django.conf import settings

    monkeypatch.setitem(settings.KV, "NODE_CACHE_TTL", 60.0)
    return refresh_nodes()


def applied_everywhere(cluster, key):
    for name in ("s1", "s2"):
        assert wait_for(lambda n=name: cluster.sql(
            cluster.node(n), "SELECT count(*) FROM kv_item WHERE key = %s", [key])[0][0] == 1)


# ------------------------------------------------------------------ session token and level


def test_token_never_weakens_a_quorum_read(cluster, restore, monkeypatch):
    """Client A holds the token of its own write; client B then completes a quorum write of the
    same key that s1 (replay paused) has not applied. A's default (quorum) read with its token
    must see B's write: the token raises the bar, it never turns the read into one node's."""
    from django.conf import settings
    from kv.nodes import CLUSTER

    a, b = make_client("rw"), make_client("rw")
    key = unique()
    token_a = put(a, key, "old")["X-KV-Token"]
    applied_everywhere(cluster, key)
    cluster.sql(cluster.node("s1"), "SELECT pg_wal_replay_pause()")
    assert put(b, key, "new").status_code == 200  # s2 applied it: ANY 1 is met
    assert cluster.sql(cluster.node("s1"), "SELECT value FROM kv_item WHERE key = %s",
                       [key]) == [("old",)]
    monkeypatch.setitem(settings.KV, "NODE_CACHE_TTL", 60.0)
    refresh_nodes()
    for _ in range(10):
        CLUSTER.mark_failed("s2")  # s1 is asked first wherever the order allows it
        g = a.get(f"/api/kv/{key}", headers={"X-KV-Token": token_a})
        assert g.status_code == 200, g.content
        assert g.json()["value"] == "new", (g["X-KV-Node"], g.json())
    # B's token is past s1's replay position: a quorum read with it never counts s1
    token_b = put(b, key, "newer")["X-KV-Token"]
    for _ in range(10):
        CLUSTER.mark_failed("s2")
        g = a.get(f"/api/kv/{key}", headers={"X-KV-Token": token_b})
        assert g.status_code == 200 and g.json()["value"] == "newer", g.content
        g = a.get(f"/api/kv/{key}?r=one&max_lag=3600", headers={"X-KV-Token": token_b})
        assert g.status_code == 200 and g.json()["value"] == "newer", g.content
        assert g["X-KV-Node"] != "s1"


def test_a_standby_behind_the_token_is_checked_again(client, cluster, restore, caplog):
    """A w=one write's token, both standbys' replay paused: only the primary has the token, so a
    quorum read with it waits (re-checking, not failing the standbys) until s2 resumes, then
    answers from R nodes that have the write; s1, still behind, is never reported failed."""
    import logging

    from django.conf import settings

    key = unique()
    for name in ("s1", "s2"):
        cluster.sql(cluster.node(name), "SELECT pg_wal_replay_pause()")
    w = put(client, key, "local", "?w=one")
    assert w.status_code == 201, w.content
    refresh_nodes()
    timer = threading.Timer(0.4, cluster.sql, (cluster.node("s2"), "SELECT pg_wal_replay_resume()"))
    caplog.set_level(logging.WARNING, logger="kv.quorum")
    started = time.monotonic()
    timer.start()
    try:
        g = client.get(f"/api/kv/{key}", headers={"X-KV-Token": w["X-KV-Token"]})
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert g.status_code == 200 and g.json()["value"] == "local", g.content
    assert 0.4 <= elapsed < settings.KV["READ_TIMEOUT"], elapsed
    assert [r.getMessage() for r in caplog.records if r.name == "kv.quorum"] == []


# ------------------------------------------------------------------ stopped WAL receiver


def test_r_one_notices_a_standby_whose_wal_receiver_stopped(client, cluster, restore):
    """s1's WAL receiver is stopped (SIGSTOP on that one process): s1 stays up and still says
    'streaming', its received and replayed positions are equal, and pg_stat_replication keeps
    its last lag figures until wal_sender_timeout. r=one with max_lag=1 must stop serving it
    within max_lag + KV_NODE_CACHE_TTL + one probe (at most KV_READ_TIMEOUT) of a write it
    missed: the refresh thread's states are that old at most."""
    from django.conf import settings

    key = unique()
    assert put(client, key, "old").status_code == 201
    applied_everywhere(cluster, key)
    s1 = cluster.node("s1")
    receiver = cluster.sql(s1, "SELECT pid FROM pg_stat_wal_receiver")[0][0]
    with stopped([receiver]):
        refresh_nodes()
        assert put(client, key, "new").status_code == 200  # s2 applied it: ANY 1 is met
        written = time.monotonic()
        max_lag = 1.0
        ready_at = (written + max_lag + settings.KV["NODE_CACHE_TTL"]
                    + settings.KV["READ_TIMEOUT"])
        while time.monotonic() < ready_at:  # reads go on meanwhile (probes every TTL)
            assert client.get(f"/api/kv/{key}?r=one&max_lag=1").status_code == 200
            time.sleep(0.1)
        served = []
        for _ in range(20):
            g = client.get(f"/api/kv/{key}?r=one&max_lag=1")
            assert g.status_code == 200
            served.append((g["X-KV-Node"], g.json()["value"]))
        assert all(value == "new" for _node, value in served), served
        state = refresh_nodes()
        assert state.nodes["s1"].receiver_status == "streaming"  # it still looks streaming
        assert cluster.sql(s1, "SELECT value FROM kv_item WHERE key = %s", [key]) == [("old",)]
        assert "s1" not in state.standbys(max_lag=max_lag), state.nodes["s1"]


# ------------------------------------------------------------------ frozen nodes


def test_token_lookup_answers_while_the_primary_is_frozen(client, cluster, restore,
                                                          cached_state):
    """A cold token cache and a frozen primary that the node states still call the primary:
    the token lookup must answer within KV_READ_TIMEOUT (here from a standby)."""
    from django.conf import settings
    from kv import auth

    key = unique()
    assert put(client, key, "auth").status_code == 201
    applied_everywhere(cluster, key)
    timeout = settings.KV["READ_TIMEOUT"]
    warm, frozen = threading.Event(), threading.Event()

    def reads():
        c = make_client("ro")
        auth.clear_cache()
        assert c.get(f"/api/kv/{key}?r=one").status_code == 200  # connections warm
        warm.set()
        assert frozen.wait(30)
        auth.clear_cache()
        started = time.monotonic()
        g = c.get(f"/api/kv/{key}?r=one")
        return g.status_code, g.content, time.monotonic() - started

    thread, result = in_thread(reads)
    assert warm.wait(30), result
    with stopped(_cluster_pids(cluster.primary)):
        frozen.set()
        thread.join(timeout + 1.0)
        answered = not thread.is_alive()
    thread.join(30)
    assert answered, f"no answer within {timeout + 1.0}s while the primary was frozen"
    assert "error" not in result, result
    status, content, elapsed = result["value"]
    assert status == 200, content
    assert elapsed < timeout + 1.0, elapsed


def test_listings_answer_while_a_standby_is_frozen(client, cluster, restore, cached_state):
    """Right after s1 froze (the node states still list it): quorum, r=one and r=primary
    listings all answer 200 with every key, each within KV_READ_TIMEOUT plus a margin."""
    from django.conf import settings

    timeout = settings.KV["READ_TIMEOUT"]
    ns = unique("frozenlist") + "/"
    for i in range(3):
        assert put(client, f"{ns}{i}", i).status_code == 201
    expected = [f"{ns}{i}" for i in range(3)]
    applied_everywhere(cluster, expected[-1])
    levels = ["quorum"] * 6 + ["one"] * 3 + ["primary"] * 3

    def listings():
        c = make_client("ro")
        out = []
        for level in levels:
            started = time.monotonic()
            r = c.get("/api/kv/", {"prefix": ns, "r": level})
            keys = [i["key"] for i in r.json().get("items", [])] if r.status_code == 200 else None
            out.append((level, r.status_code, keys, time.monotonic() - started))
        return out

    with stopped(_cluster_pids(cluster.node("s1"))):
        thread, result = in_thread(listings)
        thread.join(len(levels) * (timeout + 1.0))
        answered = not thread.is_alive()
    thread.join(30)
    assert answered, "listings still waiting on the frozen standby"
    assert "error" not in result, result
    for level, status, keys, elapsed in result["value"]:
        assert (level, status, keys) == (level, 200, expected), result["value"]
        assert elapsed < timeout + 1.0, (level, elapsed)


def test_a_node_that_fails_while_the_probes_run_stays_suspect(monkeypatch):
    """A probe that answered before its node hung must not clear the failure a read saw after
    it: the node stays last in the read order until the next probe (else every refresh sends
    reads to the hung node again, each one waiting for its hedge)."""
    from kv import nodes, selection
    from kv.nodes import CLUSTER

    refresh_nodes()
    build = nodes.Cluster._build

    def failing_during_the_probes(self, *args, **kwargs):
        CLUSTER.mark_failed("s1")  # a read saw s1 fail while the probes were running
        return build(self, *args, **kwargs)

    monkeypatch.setattr(nodes.Cluster, "_build", failing_during_the_probes)
    CLUSTER._refresh()
    monkeypatch.setattr(nodes.Cluster, "_build", build)
    assert "s1" in CLUSTER._failed
    for _ in range(20):
        assert selection.order(["p1", "s1", "s2"])[-1] == "s1"
    CLUSTER._refresh()  # a probe started after the failure clears it
    assert "s1" not in CLUSTER._failed
