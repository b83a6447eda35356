"""The write path under a frozen or stuck primary, and bad If-Match values: every write answers
within KV_WRITE_TIMEOUT + kv.watchdog.MARGIN, its answer tells the truth about what was
written, reads that do not need the primary go on meanwhile, and bad client input never
changes what the service thinks of a node."""

import contextlib
import logging
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import make_client, refresh_nodes, unique
from tests.test_fanout import _cluster_pids, stopped
from tests.test_faults import put, wait_for


def _timed_put(key, value, query=""):
    client = make_client("rw")
    started = time.monotonic()
    r = put(client, key, value, query)
    return r.status_code, r.json() if r.content else None, time.monotonic() - started


def _close_connections():
    from django.db import connections

    connections.close_all()


@contextlib.contextmanager
def frozen(node, at_most: float):
    """Every process of ``node`` stopped (SIGSTOP): its kernel still accepts connections and
    acknowledges data, nothing answers. Always thawed: on leaving, and after ``at_most``
    seconds by a separate process, which thaws it even if this one hangs."""
    pids = _cluster_pids(node)
    thaw = f"sleep {at_most}; kill -CONT {' '.join(map(str, pids))}"
    guard = subprocess.Popen(["sh", "-c", thaw], start_new_session=True)
    try:
        with stopped(pids):
            yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(guard.pid, signal.SIGKILL)
        guard.wait(timeout=10)


@pytest.fixture
def writer(restore):
    """A thread that keeps its own Django connection to the primary, like a gunicorn thread."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="writer")
    try:
        yield pool
    finally:
        try:
            pool.submit(_close_connections).result(timeout=30)
        finally:
            pool.shutdown(wait=False)


def _primary_value(cluster, key):
    rows = cluster.sql(cluster.primary, "SELECT value, deleted FROM kv_item WHERE key = %s",
                       [key])
    return rows[0][0] if rows and not rows[0][1] else None


@pytest.mark.parametrize("connection", ["busy", "idle"])
def test_a_frozen_primary_holds_neither_the_write_nor_the_reads(client, cluster, writer,
                                                                monkeypatch, connection):
    """The primary freezes while a thread writes. The write answers 503 within
    KV_WRITE_TIMEOUT + MARGIN and says nothing was written (true: it never reached COMMIT);
    reads that the standbys serve answer all along. ``idle``: the write starts with the check
    of a connection that sat idle, which must be under the deadline too."""
    from django.conf import settings
    from kv import auth, fanout, watchdog, writes

    timeout = settings.KV["WRITE_TIMEOUT"]
    key = unique()
    assert put(client, key, "before").status_code == 201
    cluster.wait_replayed()
    refresh_nodes()
    # the probes of a frozen node and the token lookup (both on the primary) are not under
    # test here: every request uses this state and the cached token
    monkeypatch.setitem(settings.KV, "NODE_CACHE_TTL", 600)
    monkeypatch.setitem(settings.KV, "TOKEN_CACHE_TTL", 600)
    auth.clear_cache()
    assert client.get(f"/api/kv/{key}?r=one").status_code == 200
    if connection == "idle":
        monkeypatch.setattr(writes, "_IDLE_CHECK_AFTER", 0.0)
    assert writer.submit(_timed_put, key, "warm").result(timeout=30)[0] == 200
    reads = []  # (level, seconds, status, value, node)
    with frozen(cluster.primary, at_most=timeout + watchdog.MARGIN + 8):
        started = time.monotonic()
        fut = writer.submit(_timed_put, key, "frozen")
        while not fut.done() and time.monotonic() - started < timeout + watchdog.MARGIN + 2:
            for level in ("one", "quorum"):
                t = time.monotonic()
                g = client.get(f"/api/kv/{key}?r={level}")
                reads.append((level, time.monotonic() - t, g.status_code,
                               g.json().get("value"), g.get("X-KV-Node")))
        done_while_frozen = fut.done()
    status, body, elapsed = fut.result(timeout=60)
    assert done_while_frozen, f"the write did not answer while the primary was frozen ({body})"
    assert status == 503, body
    assert elapsed < timeout + watchdog.MARGIN, elapsed
    assert body["error"] == "quorum_unavailable" and "committed_locally" not in body, body
    # reads served by the standbys never waited for the frozen primary (the hedge delay at
    # most, for a quorum read that asked it before it was found silent)
    hedge = settings.KV["READ_TIMEOUT"] * fanout.HEDGE_FRACTION
    slowest = {lv: max(r[1] for r in reads if r[0] == lv) for lv in ("one", "quorum")}
    assert slowest["one"] < 1.0 and slowest["quorum"] < hedge + 1.0, reads
    assert len(reads) >= 4, reads
    assert {r[2:4] for r in reads} == {(200, "warm")} and all(r[4] != "p1" for r in reads), reads
    # nothing was written, as the answer said; the primary works again once thawed
    assert _primary_value(cluster, key) == "warm"
    monkeypatch.setitem(settings.KV, "NODE_CACHE_TTL", 0.3)
    refresh_nodes()
    assert wait_for(lambda: put(client, key, "after").status_code == 200)
    assert _primary_value(cluster, key) == "after"


def test_a_cancel_dropped_between_statements_does_not_unbound_commit(cluster, writer,
                                                                      monkeypatch):
    """The deadline passes while the thread is between its statement and COMMIT (held there
    here): PostgreSQL drops a cancel that arrives then, and COMMIT then waits for standbys that
    do not apply. The watchdog cancels again while the write has not returned: the wait is
    cancelled, the answer says committed on the primary only, with the version the primary
    has."""
    from django.conf import settings
    from django.db import connections
    from kv import watchdog

    timeout = settings.KV["WRITE_TIMEOUT"]
    key = unique()
    assert writer.submit(_timed_put, key, "v1").result(timeout=30)[0] == 201
    for name in ("s1", "s2"):
        cluster.sql(cluster.node(name), "SELECT pg_wal_replay_pause()")
    refresh_nodes()

    def hold_before_commit():
        conn = connections["p1"]
        real = conn._commit
        began = time.monotonic()

        def late_commit():
            # past the deadline, and past the first cancel request
            time.sleep(max(0.0, timeout + 0.1 - (time.monotonic() - began)))
            return real()
        conn._commit = late_commit
        return lambda: conn.__dict__.pop("_commit", None)

    undo = writer.submit(hold_before_commit).result(timeout=10)
    try:
        status, body, elapsed = writer.submit(_timed_put, key, "v2").result(
            timeout=timeout + watchdog.MARGIN + 5)
    finally:
        for name in ("s1", "s2"):
            cluster.sql(cluster.node(name), "SELECT pg_wal_replay_resume()")
        writer.submit(undo).result(timeout=30)
    assert status == 503, body
    assert elapsed < timeout + watchdog.MARGIN, elapsed
    assert body["committed_locally"] is True, body
    rows = cluster.sql(cluster.primary, "SELECT value, version FROM kv_item WHERE key = %s",
                       [key])
    assert rows == [("v2", int(body["version"]))]


def test_a_row_lock_held_elsewhere_bounds_the_write(client, cluster, writer):
    """Another session holds the key's row lock: the write's lock wait is cancelled at the
    deadline, nothing is written, and the next write after the lock is released works."""
    from django.conf import settings
    from kv import watchdog

    timeout = settings.KV["WRITE_TIMEOUT"]
    key = unique()
    assert put(client, key, "mine").status_code == 201
    locker = cluster.connect(cluster.primary, autocommit=False)
    try:
        with locker.cursor() as cur:
            cur.execute("SELECT 1 FROM kv_item WHERE key = %s FOR UPDATE", [key])
        status, body, elapsed = writer.submit(_timed_put, key, "blocked").result(
            timeout=timeout + watchdog.MARGIN + 30)
    finally:
        locker.rollback()
        locker.close()
    assert status == 503 and "committed_locally" not in body, body
    assert "rolled back" in body["detail"], body
    assert elapsed < timeout + watchdog.MARGIN, elapsed
    assert _primary_value(cluster, key) == "mine"
    assert writer.submit(_timed_put, key, "next").result(timeout=30)[0] == 200


@pytest.mark.parametrize("tag", ['"9999999999999999999"', 'W/"9223372036854775808"',
                                 '"9223372036854775807"', '"12", "99999999999999999999"'])
def test_an_impossible_if_match_is_412_and_blames_no_node(client, caplog, tag):
    """A version outside bigint (where no version can be) matches no version: 412, the key is
    unchanged, and no node is reported failed."""
    from kv.nodes import CLUSTER

    key = unique()
    created = put(client, key, "kept")
    assert created.status_code == 201
    state = refresh_nodes()
    caplog.set_level(logging.WARNING, logger="kv.quorum")
    for level in ("quorum", "one"):
        r = client.put(f"/api/kv/{key}?w={level}", {"value": "changed"},
                       content_type="application/json", headers={"If-Match": tag})
        assert r.status_code == 412, r.content
        assert r.json()["error"] == "precondition_failed"
        r = client.delete(f"/api/kv/{key}?w={level}", headers={"If-Match": tag})
        assert r.status_code == 412, r.content
    assert [rec.getMessage() for rec in caplog.records if rec.name == "kv.quorum"] == []
    assert not CLUSTER._failed, CLUSTER._failed
    after = CLUSTER.state()
    assert after.primary == state.primary == "p1"
    assert all(s.eligible for s in after.nodes.values()), after.nodes
    g = client.get(f"/api/kv/{key}?r=primary")
    assert g.status_code == 200, g.content
    assert g.json() == {"key": key, "value": "kept", "version": created.json()["version"]}
