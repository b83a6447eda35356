"""Writes at a consistency level (see docs/consistency.md).

One call of the SQL function ``kv_write`` in a transaction on the primary (kv.selection's
write_target); the function sets ``synchronous_commit`` (remote_apply for w=quorum, local for
w=one) and, for w=quorum, refuses to write when fewer than k standbys are streaming. The
transaction runs under a deadline (KV_WRITE_TIMEOUT, kv.watchdog): when it passes, the query or
the commit's wait for standbys is cancelled. A cancelled commit has committed on the primary:
that outcome is indeterminate and answered with 503 ``committed_locally: true``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time

from django.conf import settings
from django.db import DatabaseError, DataError, connections

from . import metrics, selection
from .consistency import format_session_token, parse_lsn, split_version
from .nodes import CLUSTER
from .outcomes import QuorumUnavailable, WriteResult, node_failed, write_nodes
from .watchdog import WATCHDOG

WRITE_SQL = "SELECT * FROM kv_write(%s, %s, %s::jsonb, %s, %s::bigint[], %s, %s)"
# COMMIT and the WAL position for the session token in one round trip: the position is read
# after the commit record, and an error anywhere in it is a failure during COMMIT (unknown).
COMMIT_SQL = "COMMIT; SELECT pg_current_wal_lsn()::text"
CANCELLED_WAIT = "canceling wait for synchronous replication"


class WriteDeadline(Exception):
    """The write's deadline passed before its COMMIT was sent: nothing was written."""


def write(op: str, key: str, value_json: str | None, cond: str, versions: list[int],
          level: str) -> WriteResult:
    """Write at a level. ``value_json`` is the encoded value (see ``encode_value``);
    ``op`` put|delete; ``cond`` none|match|match_any|none_match|create; ``level`` quorum|one.

    Everything from here on runs under the write's deadline (kv.watchdog): the node states,
    the connection check, the statement, and COMMIT with the session token's query (two round
    trips to the primary in all).
    """
    deadline = WATCHDOG.arm(settings.KV["WRITE_TIMEOUT"])
    try:
        return _write(deadline, op, key, value_json, cond, versions, level)
    finally:
        if WATCHDOG.disarm(deadline) and deadline.alias is not None:
            # a cancel request may still be on its way to this connection's backend: never
            # let it hit a later statement
            with contextlib.suppress(Exception):
                connections[deadline.alias].close()


def _write(deadline, op: str, key: str, value_json: str | None, cond: str, versions: list[int],
           level: str) -> WriteResult:
    mop = "delete" if op == "delete" else "write"
    timeout = settings.KV["WRITE_TIMEOUT"]
    state = CLUSTER.state()
    q = state.quorum
    primary, need = selection.write_target(state, mop, level)
    deadline.alias = primary
    conn = connections[primary]
    params = [op, key, value_json, cond, versions, level, q.k]
    committing = False
    try:
        _fresh_connection(conn, deadline)
        raw = conn.connection
        del raw.notices[:]
        # The transaction by hand, not transaction.atomic: after a failed statement Django's
        # atomic block reconnects (to restore autocommit), which against a frozen primary would
        # hold the thread for connect_timeout. On any failure the connection is closed below
        # (the server rolls back whatever was not committed).
        with conn.cursor() as cur:
            cur.execute("BEGIN; " + WRITE_SQL, params)
            status, version, created, standbys = cur.fetchone()
            if deadline.fired:
                raise WriteDeadline  # too late to commit: do not
            committing = True
            cur.execute(COMMIT_SQL)
            lsn = cur.fetchone()[0]
        fired = deadline.fired  # when COMMIT returned
        notices = list(raw.notices)
    except (DatabaseError, WriteDeadline) as exc:
        with contextlib.suppress(Exception):
            conn.close()
        if not isinstance(exc, DataError):  # a refused value says nothing about the node
            CLUSTER.mark_failed(primary)
        if "read-only transaction" in str(exc):
            CLUSTER.invalidate()
        if isinstance(exc, WriteDeadline):
            exc = f"no answer within {timeout}s"
        text = node_failed(primary, mop, level, exc)
        nodes = write_nodes(state)
        nodes[primary] = text
        if committing:
            metrics.count(mop, level, "indeterminate")
            raise QuorumUnavailable("the connection to the primary failed during COMMIT: the "
                                    "write may or may not have been applied", need, 0, nodes,
                                    committed_locally=None) from None
        metrics.count(mop, level, "unavailable")
        if deadline.abandoned:
            detail = (f"the primary did not answer within {timeout}s; the write was not "
                      "committed (nothing was written)")
        elif deadline.fired:
            detail = f"the write did not finish within {timeout}s and was rolled back"
        else:
            detail = "the primary failed the write"
        raise QuorumUnavailable(detail, need, 0, nodes) from None

    if status == "unavailable":
        metrics.count(mop, level, "unavailable")
        nodes = write_nodes(state)
        for name, outcome in nodes.items():
            if name != primary and "streaming (" not in outcome:
                node_failed(name, mop, level, f"not a streaming synchronous standby: {outcome}")
        raise QuorumUnavailable(
            f"{standbys} synchronous standbys are streaming, {q.k} needed; nothing was written",
            need, 1 + standbys, nodes)
    cancelled = any(CANCELLED_WAIT in n for n in notices)
    if status == "ok" and (cancelled or (fired and level == "quorum")):
        metrics.count(mop, level, "indeterminate")
        for name in state.nodes:
            if name != primary:
                node_failed(name, mop, level,
                             f"did not confirm the write within {timeout}s")
        raise QuorumUnavailable(
            "the write committed on the primary, but its standbys did not confirm it within "
            f"{timeout}s: it may be lost on failover", need, 1,
            write_nodes(state), committed_locally=True, version=version)
    metrics.count(mop, level, "ok")
    token = None
    if status == "ok" and not fired:
        token = format_session_token(split_version(version)[0], parse_lsn(lsn))
    return WriteResult(status, version, bool(created), token, primary)


_IDLE_CHECK_AFTER = 2.0
_last_used = threading.local()


def _fresh_connection(conn, deadline) -> None:
    """A write must not fail on a connection the server closed while it sat idle (restart,
    failover): check one that was idle for a while, and reconnect if it is dead. A busy
    connection is not checked (no extra round trip under load). The check runs under the
    write's deadline; opening a new connection is bounded by libpq's connect_timeout."""
    now = time.monotonic()
    used = getattr(_last_used, conn.alias, None)
    setattr(_last_used, conn.alias, now)
    idle = used is None or now - used > _IDLE_CHECK_AFTER
    if conn.connection is not None and (
            conn.errors_occurred
            or (idle and (not WATCHDOG.attach(deadline, conn.connection)
                          or not conn.is_usable()))):
        conn.close()
    if deadline.fired:
        raise WriteDeadline
    conn.ensure_connection()
    if not WATCHDOG.attach(deadline, conn.connection):
        raise WriteDeadline


def encode_value(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
