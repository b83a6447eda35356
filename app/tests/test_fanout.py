"""kv.fanout: single-key reads query their nodes at once from the request thread, each thread
keeping one asynchronous connection per node. Real nodes, real faults: a node frozen with
SIGSTOP (its kernel still accepts and acknowledges, nothing answers), connections killed by the
server, and a count of the connections the reads hold."""

import contextlib
import logging
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import refresh_nodes, unique
from tests.test_faults import put


def read_backends(cluster, node) -> int:
    """Connections of kv.fanout (application_name kv-app/read) to ``node``."""
    return cluster.sql(node, "SELECT count(*) FROM pg_stat_activity "
                             "WHERE application_name = 'kv-app/read'")[0][0]


def test_reads_keep_one_connection_per_node_per_thread(client, cluster):
    key = unique()
    assert put(client, key, "v").status_code == 201
    for _ in range(20):  # quorum reads ask 2 of the 3 nodes at random: all are asked by now
        for level in ("quorum", "one", "primary"):
            assert client.get(f"/api/kv/{key}?r={level}").status_code == 200
    before = {n.name: read_backends(cluster, n) for n in cluster.nodes}
    for _ in range(30):
        for level in ("quorum", "one", "primary"):
            assert client.get(f"/api/kv/{key}?r={level}").status_code == 200
    after = {n.name: read_backends(cluster, n) for n in cluster.nodes}
    assert after == before
    assert all(count == 1 for count in after.values()), after  # one thread: one per node


def test_a_connection_killed_by_the_server_is_replaced_silently(client, cluster, restore, caplog):
    """A kept connection that died (node restarted, idle timeout, pg_terminate_backend) is
    retried once on a new connection: the read succeeds and no node is reported failed."""
    key = unique()
    assert put(client, key, {"n": 1}).status_code == 201
    # r=one may be served by the standby the quorum commit did not wait for
    cluster.wait_replayed()
    for _ in range(4):
        assert client.get(f"/api/kv/{key}").status_code == 200
        assert client.get(f"/api/kv/{key}?r=one").status_code == 200
    killed = 0
    for name in ("s1", "s2"):
        killed += sum(1 for (ok,) in cluster.sql(
            cluster.node(name),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'kv-app/read'") if ok)
    assert killed >= 2
    caplog.set_level(logging.WARNING, logger="kv.quorum")
    for _ in range(4):
        g = client.get(f"/api/kv/{key}")
        assert g.status_code == 200 and g.json()["value"] == {"n": 1}
        g = client.get(f"/api/kv/{key}?r=one")
        assert g.status_code == 200 and g.json()["value"] == {"n": 1}
    failed = [r.getMessage() for r in caplog.records if r.name == "kv.quorum"]
    assert failed == []


def _cluster_pids(node) -> list[int]:
    with open(os.path.join(node.datadir, "postmaster.pid")) as fh:
        postmaster = int(fh.readline())
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                              text=True, timeout=10).stdout.split()
    return [postmaster, *map(int, children)]


@contextlib.contextmanager
def stopped(pids):
    """SIGSTOP ``pids``; SIGCONT them however the block ends."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def frozen_s1(cluster, restore):
    """s1 with every process stopped (SIGSTOP): it accepts TCP connections and acknowledges
    data in the kernel, and never answers. Thawed afterwards."""
    with stopped(_cluster_pids(cluster.node("s1"))):
        yield cluster


def test_a_frozen_node_delays_a_read_by_the_hedge_delay_only(client, frozen_s1):
    """While s1 hangs, a read that asks it asks one more node after a quarter of
    KV_READ_TIMEOUT (the hedge) and answers from the others; s1 is then asked last. A read
    that refreshes the node states first also waits for the probes (each bounded by
    KV_READ_TIMEOUT). No read fails, none answers from s1, none waits the whole timeout twice."""
    from django.conf import settings
    from kv import fanout

    timeout = settings.KV["READ_TIMEOUT"]
    key = unique()
    assert put(client, key, "frozen").status_code == 201
    slow = []
    for i in range(12):
        level = ("quorum", "one", "primary")[i % 3]
        started = time.monotonic()
        g = client.get(f"/api/kv/{key}?r={level}")
        elapsed = time.monotonic() - started
        assert g.status_code == 200 and g.json()["value"] == "frozen", g.content
        assert g["X-KV-Node"] != "s1"
        assert elapsed < timeout + timeout * fanout.HEDGE_FRACTION + 1.0, (level, elapsed)
        if elapsed > timeout * fanout.HEDGE_FRACTION:
            slow.append((level, round(elapsed, 3)))
    # s1 goes last once a read found it silent: the later reads do not wait for it
    assert len(slow) <= 3, slow
    state = refresh_nodes()
    assert not state.nodes["s1"].eligible


def _gather(key, candidates, need, timeout=1.5):
    from kv import fanout
    from kv.reads import READ_SQL

    failures = {}

    def on_failure(name, exc):
        failures[name] = str(exc)
        return str(exc)

    started = time.monotonic()
    answers, outcomes = fanout.gather(READ_SQL, [key], iter(candidates), need, timeout,
                                      on_failure)
    return answers, outcomes, failures, time.monotonic() - started


def test_gather_hedges_a_silent_node(client, frozen_s1):
    key = unique()
    assert put(client, key, "hedged").status_code == 201
    answers, outcomes, failures, elapsed = _gather(key, ["s1", "s2", "p1"], 2)
    assert sorted(name for name, _row in answers) == ["p1", "s2"]
    assert all(row[0] == "hedged" for _name, row in answers)
    assert outcomes["s2"] == outcomes["p1"] == "ok"
    # asked beside s1 after the hedge delay, not at once, and answered before the deadline
    assert "when the other nodes' answers were enough" in failures["s1"], failures
    assert elapsed >= 1.5 * 0.25, elapsed


def test_gather_gives_up_on_a_silent_node_at_the_timeout(client, frozen_s1):
    """No candidate left to hedge with: the read returns short, at the timeout, not later."""
    key = unique()
    assert put(client, key, "short").status_code == 201
    answers, outcomes, failures, elapsed = _gather(key, ["s1", "s2"], 2)
    assert [name for name, _row in answers] == ["s2"]
    assert failures == {"s1": "no answer within 1.5s"}
    assert outcomes == {"s2": "ok", "s1": "no answer within 1.5s"}
    assert 1.5 <= elapsed < 2.5, elapsed
    # the connection that did not answer was closed: a later read opens a new one and works
    # once the node is back (here: the other node only, s1 is still frozen)
    answers, _outcomes, failures, _elapsed = _gather(key, ["s2"], 1)
    assert answers and not failures


def test_gather_replaces_a_refusing_node_at_once(client, cluster, restore, monkeypatch):
    """A refused connection is replaced by the next candidate on the spot: with the hedge
    turned off, only that replacement can bring in the second answer."""
    from kv import fanout

    monkeypatch.setattr(fanout, "HEDGE_FRACTION", 1.0)
    key = unique()
    assert put(client, key, "refused").status_code == 201
    cluster.stop(cluster.node("s1"))
    answers, _outcomes, failures, _elapsed = _gather(key, ["s1", "s2", "p1"], 2)
    assert sorted(name for name, _row in answers) == ["p1", "s2"]
    assert "s1" in failures and "no answer" not in failures["s1"], failures


def test_conn_max_age_zero_keeps_no_read_connection(client, cluster, monkeypatch):
    """KV_DB_CONN_MAX_AGE=0 means no connection outlives its request (as Django does)."""
    from django.conf import settings

    key = unique()
    assert put(client, key, "short-lived").status_code == 201
    assert client.get(f"/api/kv/{key}?r=quorum").status_code == 200
    assert sum(read_backends(cluster, n) for n in cluster.nodes) >= 2
    for alias in settings.DATABASES:
        monkeypatch.setitem(settings.DATABASES[alias], "CONN_MAX_AGE", 0)
    for level in ("quorum", "one", "primary"):
        g = client.get(f"/api/kv/{key}?r={level}")
        assert g.status_code == 200 and g.json()["value"] == "short-lived"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the servers see the disconnections a moment later
        counts = {n.name: read_backends(cluster, n) for n in cluster.nodes}
        if not any(counts.values()):
            break
        time.sleep(0.05)
    assert counts == {"p1": 0, "s1": 0, "s2": 0}
