"""Reads and writes at a consistency level (see docs/consistency.md).

Writes: one call of the SQL function ``kv_write`` in a transaction on the primary; the function
sets ``synchronous_commit`` (remote_apply for w=quorum, local for w=one) and, for w=quorum,
refuses to write when fewer than k standbys are streaming. The transaction runs under a deadline
(KV_WRITE_TIMEOUT): when it passes, the query or the commit's wait for standbys is cancelled.
A cancelled commit has committed on the primary: that outcome is indeterminate and answered
with 503 ``committed_locally: true``.

Reads: ``quorum`` asks R nodes concurrently (replacing a node that fails by the next healthy
one) and takes the highest version; ``primary`` asks the primary; ``one`` asks a standby chosen by
the router. A session token is a lower bound on top of the level: a node counts only once it has
replayed the token's position (checked in a statement of its own before the read). Every read
runs in the request thread through kv.fanout (non-blocking queries, all bounded by
KV_READ_TIMEOUT); listings too (kv.reads).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, DataError, connections

from . import fanout, metrics
from .consistency import format_lsn, format_session_token, newest, parse_lsn, split_version
from .models import KVItem
from .nodes import CLUSTER, ClusterState, pick
from .routers import kv_read_order
from .watchdog import WATCHDOG

log = logging.getLogger("kv.quorum")

WRITE_SQL = "SELECT * FROM kv_write(%s, %s, %s::jsonb, %s, %s::bigint[], %s, %s)"
# COMMIT and the WAL position for the session token in one round trip: the position is read
# after the commit record, and an error anywhere in it is a failure during COMMIT (unknown).
COMMIT_SQL = "COMMIT; SELECT pg_current_wal_lsn()::text"
CANCELLED_WAIT = "canceling wait for synchronous replication"


class QuorumUnavailable(Exception):
    def __init__(self, detail: str, needed: int, got: int, nodes: dict,
                 committed_locally: bool | None = False, version: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.needed = needed
        self.got = got
        self.nodes = nodes
        self.committed_locally = committed_locally
        self.version = version

    def body(self) -> dict:
        body = {"error": "quorum_unavailable", "detail": self.detail, "needed": self.needed,
                "got": self.got, "nodes": self.nodes}
        if self.committed_locally is not False:
            body["committed_locally"] = self.committed_locally
        if self.version is not None:
            body["version"] = str(self.version)
        return body


@dataclass
class ReadResult:
    found: bool
    value: object = None
    version: int | None = None
    node: str | None = None


@dataclass
class WriteResult:
    status: str  # ok | not_found | precondition_failed | exists
    version: int | None = None
    created: bool = False
    session_token: str | None = None
    node: str | None = None


def _node_failed(name: str, op: str, level: str, exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    log.warning(
        "Node %s - %s failed", name, op,
        extra={"ecs": {"event.action": "quorum_node_failed", "event.outcome": "failure",
                       "kv.node": name, "kv.op": op, "kv.level": level,
                       "error.message": text}},
    )
    return text


# ------------------------------------------------------------------ reads


# The hot path of every read: one fixed statement through the connection's cursor rather than a
# queryset (building and compiling a queryset costs more CPU than the query itself takes here).
# Django's PostgreSQL backend hands jsonb over as text: decoded as KVItem.value would be.
READ_SQL = f"SELECT value, version, deleted FROM {KVItem._meta.db_table} WHERE key = %s"


def fetch_row(alias: str, key: str):
    """(value, version, deleted) of ``key`` on node ``alias``, or None. Also the bare benchmark
    view's lookup (kv.views.bare_get), so that the ceiling costs what an API read costs."""
    with connections[alias].cursor() as cur:
        cur.execute(READ_SQL, [key])
        row = cur.fetchone()
    if row is None:
        return None
    value = row[0]
    return (json.loads(value) if isinstance(value, str) else value), row[1], row[2]


def _result(row, node: str) -> ReadResult:
    if row is None or row[2]:
        return ReadResult(False, None, row[1] if row else None, node)
    return ReadResult(True, row[0], row[1], node)


def _unreachable_nodes(state: ClusterState) -> dict:
    return {n: f"not eligible: {s.reason or s.role}" for n, s in state.nodes.items()
            if not s.eligible}


def _refuse_unsafe_quorum(state: ClusterState, op: str, level: str) -> None:
    """A quorum read or write counts on R + W > N: refuse it when the configuration cannot
    give that (ClusterState.config_error; also logged and in /readyz)."""
    if state.config_error is None:
        return
    metrics.count(op, level, "unavailable")
    need = state.quorum.r if op == "read" else state.quorum.w
    raise QuorumUnavailable(f"quorum {op}s are refused: {state.config_error}", need, 0,
                            _unreachable_nodes(state))


def _read_failed(level: str):
    def on_failure(name: str, exc: BaseException | str) -> str:
        CLUSTER.mark_failed(name)
        return _node_failed(name, "read", level, exc)
    return on_failure


# A node serves a read with a session token only once it has replayed the token's position.
TOKEN_CHECK_SQL = ("SELECT NOT pg_is_in_recovery() "
                   "OR coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)")
BEHIND_TOKEN = "behind the session token"


def token_check(after_lsn: int | None) -> tuple[str, list, str] | None:
    """kv.fanout's ``check`` for a read that must see everything up to ``after_lsn``."""
    return None if after_lsn is None else (TOKEN_CHECK_SQL, [format_lsn(after_lsn)], BEHIND_TOKEN)


def _read_nodes(candidates, need: int, key: str, level: str, after_lsn: int | None = None):
    """(answers, outcomes) of READ_SQL on ``need`` nodes at once (kv.fanout); the value comes
    decoded (psycopg2's jsonb typecaster), as fetch_row returns it. With ``after_lsn`` (a
    session token) only nodes that have replayed that position count."""
    return fanout.gather(READ_SQL, [key], candidates, need, settings.KV["READ_TIMEOUT"],
                         _read_failed(level), metrics.observe_read, check=token_check(after_lsn))


def read_quorum(key: str, after_lsn: int | None = None) -> ReadResult:
    """R nodes, highest version wins; with a session token, R nodes that have replayed it."""
    state = CLUSTER.state()
    _refuse_unsafe_quorum(state, "read", "quorum")
    need = state.quorum.r
    answers, outcomes = _read_nodes(pick(state.eligible()), need, key, "quorum", after_lsn)
    if len(answers) < need:
        metrics.count("read", "quorum", "unavailable")
        raise QuorumUnavailable(f"{len(answers)} of the {need} nodes a quorum read needs answered",
                                need, len(answers), {**_unreachable_nodes(state), **outcomes})
    metrics.count("read", "quorum", "ok")
    # a tombstone takes part with its version; a missing row with none
    best = newest([(row[1] if row is not None else 0, (row, name)) for name, row in answers])
    row, node = best[1]  # type: ignore[index]
    return _result(row, node)


def read_primary(key: str) -> ReadResult:
    state = CLUSTER.state()
    if state.primary is None:
        metrics.count("read", "primary", "unavailable")
        raise QuorumUnavailable("no primary is reachable", 1, 0, _unreachable_nodes(state))
    answers, outcomes = _read_nodes([state.primary], 1, key, "primary")
    if not answers:
        metrics.count("read", "primary", "unavailable")
        raise QuorumUnavailable("the primary did not answer", 1, 0, outcomes)
    metrics.count("read", "primary", "ok")
    return _result(answers[0][1], state.primary)


def read_one(key: str, max_lag: float, after_lsn: int | None = None) -> ReadResult:
    """A standby chosen by the router (lag within max_lag), else the primary; with a session
    token, the first of them that has replayed it."""
    answers, outcomes = _read_nodes(kv_read_order(CLUSTER.state(), max_lag), 1, key, "one",
                                    after_lsn)
    if not answers:
        metrics.count("read", "one", "unavailable")
        raise QuorumUnavailable("no node answered", 1, 0, outcomes or _unreachable_nodes(
            CLUSTER.state()))
    metrics.count("read", "one", "ok")
    name, row = answers[0]
    return _result(row, name)



# ------------------------------------------------------------------ writes


def _write_nodes(state: ClusterState, standbys: int | None) -> dict:
    out = {}
    for name, s in state.nodes.items():
        if name == state.primary:
            out[name] = "primary"
        elif s.in_recovery and s.reachable:
            out[name] = f"standby: {s.replication_state or 'not streaming'}" + (
                f" ({s.sync_state})" if s.sync_state else "")
        else:
            out[name] = f"{s.role}: {s.reason or s.error or ''}".rstrip(": ")
    return out


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
    need = q.w if level == "quorum" else 1
    primary = state.primary
    if primary is None:
        metrics.count(mop, level, "unavailable")
        raise QuorumUnavailable("no primary is reachable", need, 0, _write_nodes(state, None))
    if level == "quorum":
        _refuse_unsafe_quorum(state, mop, level)
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
        text = _node_failed(primary, mop, level, exc)
        nodes = _write_nodes(state, None)
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
        nodes = _write_nodes(state, standbys)
        for name, outcome in nodes.items():
            if name != primary and "streaming (" not in outcome:
                _node_failed(name, mop, level, f"not a streaming synchronous standby: {outcome}")
        raise QuorumUnavailable(
            f"{standbys} synchronous standbys are streaming, {q.k} needed; nothing was written",
            need, 1 + standbys, nodes)
    cancelled = any(CANCELLED_WAIT in n for n in notices)
    if status == "ok" and (cancelled or (fired and level == "quorum")):
        metrics.count(mop, level, "indeterminate")
        for name in state.nodes:
            if name != primary:
                _node_failed(name, mop, level,
                             f"did not confirm the write within {timeout}s")
        raise QuorumUnavailable(
            "the write committed on the primary, but its standbys did not confirm it within "
            f"{timeout}s: it may be lost on failover", need, 1,
            _write_nodes(state, standbys), committed_locally=True, version=version)
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

