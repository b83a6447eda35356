"""Reads and writes at a consistency level (see ../shared/design/consistency.md).

Writes: one call of the SQL function ``kv_write`` in a transaction on the primary; the function
sets ``synchronous_commit`` (remote_apply for w=quorum, local for w=one) and, for w=quorum,
refuses to write when fewer than k standbys are streaming. The transaction runs under a deadline
(KV_WRITE_TIMEOUT): when it passes, the query or the commit's wait for standbys is cancelled.
A cancelled commit has committed on the primary: that outcome is indeterminate and answered
with 503 ``committed_locally: true``.

Reads: ``quorum`` asks R nodes concurrently (replacing a node that fails by the next healthy
one) and takes the highest version; ``primary`` asks the primary; ``one`` asks a standby chosen by
the router; a session token is served by a standby that has replayed past it, else the primary.
Single-key reads at the three levels run in the request thread through kv.fanout (non-blocking
queries, all bounded by KV_READ_TIMEOUT); quorum listings run on the nodes' pools (_gather).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connections, transaction

from . import fanout, metrics
from .consistency import format_lsn, format_session_token, newest, parse_lsn, split_version
from .models import KVItem
from .nodes import CLUSTER, ClusterState, on_node, pick, pool
from .routers import kv_read_order
from .watchdog import WATCHDOG

log = logging.getLogger("kv.quorum")

WRITE_SQL = "SELECT * FROM kv_write(%s, %s, %s::jsonb, %s, %s::bigint[], %s, %s)"
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


def _read_row(alias: str, key: str):
    started = time.perf_counter()
    try:
        return fetch_row(alias, key)
    finally:
        metrics.observe_read(alias, time.perf_counter() - started)


def _result(row, node: str) -> ReadResult:
    if row is None or row[2]:
        return ReadResult(False, None, row[1] if row else None, node)
    return ReadResult(True, row[0], row[1], node)


def _unreachable_nodes(state: ClusterState) -> dict:
    return {n: f"not eligible: {s.reason or s.role}" for n, s in state.nodes.items()
            if not s.eligible}


def _gather(fn, *args) -> list[tuple[str, object]]:
    """Run ``fn(node, *args)`` on R nodes that may serve reads, concurrently (one in this
    thread, R - 1 on the nodes' pools); replace a node that fails by the next one. Returns R
    (node, result) pairs, or raises QuorumUnavailable with every node's outcome. Quorum
    listings use it (ORM queries of many rows, where a hand-off's cost does not matter);
    single-key reads use kv.fanout."""
    state = CLUSTER.state()
    need = state.quorum.r
    outcomes = _unreachable_nodes(state)
    candidates = iter(pick(state.eligible()))
    deadline = time.monotonic() + settings.KV["READ_TIMEOUT"]
    pending: dict[Future, str] = {}
    answers: list[tuple[str, object]] = []

    def submit() -> bool:
        name = next(candidates, None)
        if name is None:
            return False
        pending[pool(name).submit(on_node, name, fn, name, *args)] = name
        return True

    def record(name: str, result, failed: BaseException | None) -> None:
        if failed is not None:
            outcomes[name] = _node_failed(name, "read", "quorum", failed)
            CLUSTER.mark_failed(name)
            submit()
            return
        outcomes[name] = "ok"
        answers.append((name, result))

    inline = next(candidates, None)
    for _ in range(need - 1):
        if not submit():
            break
    if inline is not None:
        try:
            record(inline, on_node(inline, fn, inline, *args), None)
        except Exception as exc:
            record(inline, None, exc)
    while pending and len(answers) < need:
        done, _ = wait(pending, timeout=max(0.0, deadline - time.monotonic()),
                       return_when=FIRST_COMPLETED)
        if not done:
            break
        for fut in done:
            name = pending.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:
                record(name, None, exc)
                continue
            record(name, result, None)
    for fut, name in pending.items():
        fut.cancel()
        outcomes[name] = _node_failed(name, "read", "quorum",
                                      f"no answer within {settings.KV['READ_TIMEOUT']}s")
    if len(answers) < need:
        metrics.count("read", "quorum", "unavailable")
        raise QuorumUnavailable(f"{len(answers)} of the {need} nodes a quorum read needs answered",
                                need, len(answers), outcomes)
    metrics.count("read", "quorum", "ok")
    return answers[:need]


def _read_failed(level: str):
    def on_failure(name: str, exc: BaseException | str) -> str:
        CLUSTER.mark_failed(name)
        return _node_failed(name, "read", level, exc)
    return on_failure


def _read_nodes(candidates, need: int, key: str, level: str):
    """(answers, outcomes) of READ_SQL on ``need`` nodes at once (kv.fanout); the value comes
    decoded (psycopg2's jsonb typecaster), as fetch_row returns it."""
    return fanout.gather(READ_SQL, [key], candidates, need, settings.KV["READ_TIMEOUT"],
                         _read_failed(level), metrics.observe_read)


def read_quorum(key: str) -> ReadResult:
    state = CLUSTER.state()
    need = state.quorum.r
    answers, outcomes = _read_nodes(pick(state.eligible()), need, key, "quorum")
    if len(answers) < need:
        metrics.count("read", "quorum", "unavailable")
        raise QuorumUnavailable(f"{len(answers)} of the {need} nodes a quorum read needs answered",
                                need, len(answers), {**_unreachable_nodes(state), **outcomes})
    metrics.count("read", "quorum", "ok")
    # a tombstone takes part with its version; a missing row with none
    best = newest([(row[1] if row is not None else 0, (row, name)) for name, row in answers])
    row, node = best[1]  # type: ignore[index]
    return _result(row, node)


def _list_rows(alias: str, prefix: str, after: str | None, limit: int):
    started = time.perf_counter()
    try:
        qs = KVItem.objects.using(alias).all()
        if prefix:
            qs = qs.filter(key__startswith=prefix)
        if after is not None:
            qs = qs.filter(key__gt=after)
        return list(qs.order_by("key").values_list("key", "value", "version", "deleted")
                    [:limit + 1])
    finally:
        metrics.observe_read(alias, time.perf_counter() - started)


def list_quorum(prefix: str, after: str | None, limit: int):
    """One page of live keys from R nodes, merged: per key the highest version wins (tombstones
    included, then dropped). Each node returns up to limit + 1 rows in key order, so the merge
    is complete only up to the smallest last key among the nodes that had more; the page stops
    there. Returns (rows, last_key_covered or None when nothing is left)."""
    answers = _gather(_list_rows, prefix, after, limit)
    boundary = None
    for _name, rows in answers:
        if len(rows) > limit and (boundary is None or rows[-1][0] < boundary):
            boundary = rows[-1][0]
    merged: dict[str, tuple] = {}
    for _name, rows in answers:
        for row in rows:
            if boundary is not None and row[0] > boundary:
                break
            cur = merged.get(row[0])
            if cur is None or row[2] > cur[2]:
                merged[row[0]] = row
    live = [merged[k] for k in sorted(merged) if not merged[k][3]]
    if len(live) > limit:
        return live[:limit], live[limit - 1][0]
    return live, boundary


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


def read_one(key: str, max_lag: float) -> ReadResult:
    """A standby chosen by the router (lag within max_lag), else the primary."""
    answers, outcomes = _read_nodes(kv_read_order(CLUSTER.state(), max_lag), 1, key, "one")
    if not answers:
        metrics.count("read", "one", "unavailable")
        raise QuorumUnavailable("no node answered", 1, 0, outcomes or _unreachable_nodes(
            CLUSTER.state()))
    metrics.count("read", "one", "ok")
    name, row = answers[0]
    return _result(row, name)


def _token_read(alias: str, key: str, lsn: int):
    with connections[alias].cursor() as cur:
        cur.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [format_lsn(lsn)])
        if not cur.fetchone()[0]:
            return False, None
    # a new statement, so its snapshot is taken after the replay position was checked
    return True, _read_row(alias, key)


def read_token(key: str, token: tuple[int, int]) -> ReadResult:
    _timeline, lsn = token
    state = CLUSTER.state()
    for name in pick(state.standbys()):
        try:
            ok, row = on_node(name, _token_read, name, key, lsn)
        except DatabaseError as exc:
            _node_failed(name, "read", "token", exc)
            CLUSTER.mark_failed(name)
            continue
        if ok:
            metrics.count("read", "token", "ok")
            return _result(row, name)
    try:
        res = read_primary(key)
    except QuorumUnavailable:
        metrics.count("read", "token", "unavailable")
        raise
    metrics.count("read", "token", "ok")
    return res


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


def write(op: str, key: str, value_json: str | None, cond: str, versions: list[int],
          level: str) -> WriteResult:
    """Write at a level. ``value_json`` is the encoded value (see ``encode_value``);
    ``op`` put|delete; ``cond`` none|match|match_any|none_match|create; ``level`` quorum|one.
    """
    mop = "delete" if op == "delete" else "write"
    state = CLUSTER.state()
    q = state.quorum
    need = q.w if level == "quorum" else 1
    primary = state.primary
    if primary is None:
        metrics.count(mop, level, "unavailable")
        raise QuorumUnavailable("no primary is reachable", need, 0, _write_nodes(state, None))
    conn = connections[primary]
    params = [op, key, value_json, cond, versions, level, q.k]
    fired = False
    committing = False
    try:
        _fresh_connection(conn)
        raw = conn.connection
        del raw.notices[:]
        armed = WATCHDOG.arm(settings.KV["WRITE_TIMEOUT"], raw.cancel)
        try:
            with transaction.atomic(using=primary):
                with conn.cursor() as cur:
                    cur.execute(WRITE_SQL, params)
                    status, version, created, standbys = cur.fetchone()
                committing = True
        finally:
            fired = WATCHDOG.disarm(armed)
        notices = list(raw.notices)
    except DatabaseError as exc:
        CLUSTER.mark_failed(primary)
        if "read-only transaction" in str(exc):
            CLUSTER.invalidate()
        text = _node_failed(primary, mop, level, exc)
        nodes = _write_nodes(state, None)
        nodes[primary] = text
        if committing:
            metrics.count(mop, level, "indeterminate")
            raise QuorumUnavailable("the connection to the primary failed during COMMIT: the "
                                    "write may or may not have been applied", need, 0, nodes,
                                    committed_locally=None) from None
        metrics.count(mop, level, "unavailable")
        detail = (f"the write did not finish within {settings.KV['WRITE_TIMEOUT']}s and was "
                  "rolled back" if fired else "the primary failed the write")
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
                             f"did not confirm the write within {settings.KV['WRITE_TIMEOUT']}s")
        raise QuorumUnavailable(
            "the write committed on the primary, but its standbys did not confirm it within "
            f"{settings.KV['WRITE_TIMEOUT']}s: it may be lost on failover", need, 1,
            _write_nodes(state, standbys), committed_locally=True, version=version)
    metrics.count(mop, level, "ok")
    token = None
    if status == "ok":
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_current_wal_lsn()::text")
                token = format_session_token(split_version(version)[0],
                                             parse_lsn(cur.fetchone()[0]))
        except DatabaseError as exc:
            _node_failed(primary, "session token", level, exc)
    return WriteResult(status, version, bool(created), token, primary)


_IDLE_CHECK_AFTER = 2.0
_last_used = threading.local()


def _fresh_connection(conn) -> None:
    """A write must not fail on a connection the server closed while it sat idle (restart,
    failover): check one that was idle for a while, and reconnect if it is dead. A busy
    connection is not checked (no extra round trip under load)."""
    now = time.monotonic()
    used = getattr(_last_used, conn.alias, None)
    setattr(_last_used, conn.alias, now)
    idle = used is None or now - used > _IDLE_CHECK_AFTER
    if conn.connection is not None and (
            conn.errors_occurred or (idle and not conn.is_usable())):
        conn.close()
    conn.ensure_connection()


def encode_value(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

