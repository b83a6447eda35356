"""The read engine: every read of a request, single key and listing at every level, and the
token lookups (kv.auth), in the request thread (see docs/consistency.md).

One path for all of them (``ask``): kv.selection chooses the nodes for the level, kv.fanout asks
them at once (non-blocking queries, a node that fails replaced by the next, a silent one hedged,
the whole bounded by KV_READ_TIMEOUT), and a read short of answers is a 503.

- single key: ``quorum`` asks R nodes and takes the highest version; ``primary`` the primary;
  ``one`` the first node of kv.selection.read_order. A session token is a lower bound on top of
  the level: a node counts only once it has replayed the token's position (checked in a
  statement of its own before the read);
- listing: ``quorum`` asks R nodes, each returns up to limit + 1 rows in key order (tombstones
  included); merged: per key the highest version wins, then tombstones are dropped; ``primary``
  and ``one`` as for a key, the rows of the node that answered.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.db import connections

from . import fanout, metrics, selection
from .consistency import format_lsn, newest
from .models import KVItem
from .nodes import CLUSTER
from .outcomes import QuorumUnavailable, ReadResult, node_failed, unreachable_nodes

_TABLE = KVItem._meta.db_table

# The hot path of every read: one fixed statement through the connection's cursor rather than a
# queryset (building and compiling a queryset costs more CPU than the query itself takes here).
# Django's PostgreSQL backend hands jsonb over as text: decoded as KVItem.value would be.
READ_SQL = f"SELECT value, version, deleted FROM {_TABLE} WHERE key = %s"

# A node serves a read with a session token only once it has replayed the token's position.
TOKEN_CHECK_SQL = ("SELECT NOT pg_is_in_recovery() "
                   "OR coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)")
BEHIND_TOKEN = "behind the session token"


def fetch_row(alias: str, key: str):
    """(value, version, deleted) of ``key`` on node ``alias``, or None. Also the lookup of the
    benchmark's bare view (bench/kvbench), so that the ceiling costs what an API read costs."""
    with connections[alias].cursor() as cur:
        cur.execute(READ_SQL, [key])
        row = cur.fetchone()
    if row is None:
        return None
    value = row[0]
    return (json.loads(value) if isinstance(value, str) else value), row[1], row[2]


def read_failed(level: str):
    """kv.fanout's ``on_failure`` for a read at ``level``: the node goes last until the next
    probe, and the failure is logged."""
    def on_failure(name: str, exc: BaseException | str) -> str:
        CLUSTER.mark_failed(name)
        return node_failed(name, "read", level, exc)
    return on_failure


def token_check(after_lsn: int | None) -> tuple[str, list, str] | None:
    """kv.fanout's ``check`` for a read that must see everything up to ``after_lsn``."""
    return None if after_lsn is None else (TOKEN_CHECK_SQL, [format_lsn(after_lsn)], BEHIND_TOKEN)


def ask(level: str, sql: str, params: list, max_lag: float, short, after_lsn: int | None = None,
        many: bool = False) -> list[tuple[str, object]]:
    """Run ``sql`` at ``level`` on the nodes kv.selection chooses: the (node, row or with
    ``many`` rows) answers, as many as the level needs. ``short(state, need, answers, outcomes)``
    makes the QuorumUnavailable raised when fewer nodes than needed answered. The value of a
    row comes decoded (psycopg2's jsonb typecaster), as fetch_row returns it."""
    state = CLUSTER.state()
    need, candidates = selection.read_candidates(state, level, max_lag)
    answers, outcomes = fanout.gather(sql, params, candidates, need,
                                      settings.KV["READ_TIMEOUT"], read_failed(level),
                                      metrics.observe_read, check=token_check(after_lsn),
                                      many=many)
    if len(answers) < need:
        metrics.count("read", level, "unavailable")
        raise short(state, need, answers, outcomes)
    metrics.count("read", level, "ok")
    return answers


# ------------------------------------------------------------------ single keys


def _key_short(level: str):
    def short(state, need: int, answers: list, outcomes: dict) -> QuorumUnavailable:
        if level == "quorum":
            return QuorumUnavailable(
                f"{len(answers)} of the {need} nodes a quorum read needs answered", need,
                len(answers), {**unreachable_nodes(state), **outcomes})
        if level == "primary":
            return QuorumUnavailable("the primary did not answer", 1, 0, outcomes)
        return QuorumUnavailable("no node answered", 1, 0,
                                 outcomes or unreachable_nodes(CLUSTER.state()))
    return short


def _result(row, node: str) -> ReadResult:
    if row is None or row[2]:
        return ReadResult(False, None, row[1] if row else None, node)
    return ReadResult(True, row[0], row[1], node)


def read(key: str, level: str, max_lag: float, after_lsn: int | None = None) -> ReadResult:
    """``key`` at ``level`` (quorum: the highest version among R nodes; a tombstone takes part
    with its version, a missing row with none); with a session token, only nodes that have
    replayed it count (the primary has replayed every token)."""
    answers = ask(level, READ_SQL, [key], max_lag, _key_short(level),
                  after_lsn=None if level == "primary" else after_lsn)
    if level == "quorum":
        best = newest([(row[1] if row is not None else 0, (row, name)) for name, row in answers])
        row, node = best[1]  # type: ignore[index]
        return _result(row, node)
    node, row = answers[0]
    return _result(row, node)


# ------------------------------------------------------------------ listings


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching the keys that start with ``prefix`` (backslash is LIKE's
    default escape). The key column's collation is C, so PostgreSQL turns a constant pattern
    with a fixed prefix into a range scan of the primary key's index."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _list_sql(prefix: str, after: str | None, limit: int,
              tombstones: bool) -> tuple[str, list]:
    where, params = [], []
    if prefix:
        where.append("key LIKE %s")
        params.append(_like_prefix(prefix))
    if after is not None:
        where.append("key > %s")
        params.append(after)
    if not tombstones:
        where.append("NOT deleted")
    sql = (f"SELECT key, value, version, deleted FROM {_TABLE}"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY key LIMIT %s")
    return sql, [*params, limit + 1]


def _merge(answers: list[tuple[str, list]], limit: int):
    """Per key the highest version among the nodes' rows, complete up to the smallest last key
    among the nodes that had more than ``limit`` rows. Returns (live rows, last key covered or
    None when nothing is left)."""
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


def _list_short(state, need: int, answers: list, outcomes: dict) -> QuorumUnavailable:
    return QuorumUnavailable(f"{len(answers)} of the {need} nodes the listing needs answered",
                             need, len(answers), {**unreachable_nodes(state), **outcomes})


def list_page(level: str, prefix: str, after: str | None, limit: int, max_lag: float):
    """One page of live keys at ``level``: (rows of (key, value, version, deleted), last key
    of the page when more may follow else None, the node that answered or None for quorum)."""
    sql, params = _list_sql(prefix, after, limit, tombstones=level == "quorum")
    answers = ask(level, sql, params, max_lag, _list_short, many=True)
    if level == "quorum":
        rows, last = _merge(answers, limit)
        return rows, last, None
    node, rows = answers[0]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1][0] if more else None, node
