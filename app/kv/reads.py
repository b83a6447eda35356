"""Listings on the read engine of single-key reads (kv.fanout): the same node choice, hedging,
replacement of failed nodes and KV_READ_TIMEOUT deadline, in the request thread.

- ``quorum``: R nodes at once, each returns up to limit + 1 rows in key order (tombstones
  included); merged: per key the highest version wins, then tombstones are dropped;
- ``primary``: the primary; ``one``: the first node of kv_read_order (standbys within
  ``max_lag``, then the primary), replaced by the next when it fails or stays silent.
"""

from __future__ import annotations

from django.conf import settings

from . import fanout, metrics
from .models import KVItem
from .nodes import CLUSTER, pick
from .quorum import QuorumUnavailable, _read_failed, _refuse_unsafe_quorum, _unreachable_nodes
from .routers import kv_read_order

_TABLE = KVItem._meta.db_table


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


def list_page(level: str, prefix: str, after: str | None, limit: int, max_lag: float):
    """One page of live keys at ``level``: (rows of (key, value, version, deleted), last key
    of the page when more may follow else None, the node that answered or None for quorum)."""
    state = CLUSTER.state()
    if level == "quorum":
        _refuse_unsafe_quorum(state, "read", "quorum")
        need = state.quorum.r
        candidates = pick(state.eligible())
    elif level == "primary":
        if state.primary is None:
            metrics.count("read", level, "unavailable")
            raise QuorumUnavailable("no primary is reachable", 1, 0, _unreachable_nodes(state))
        need, candidates = 1, [state.primary]
    else:
        need, candidates = 1, kv_read_order(state, max_lag)
    sql, params = _list_sql(prefix, after, limit, tombstones=level == "quorum")
    answers, outcomes = fanout.gather(sql, params, candidates, need,
                                      settings.KV["READ_TIMEOUT"], _read_failed(level),
                                      metrics.observe_read, many=True)
    if len(answers) < need:
        metrics.count("read", level, "unavailable")
        raise QuorumUnavailable(f"{len(answers)} of the {need} nodes the listing needs answered",
                                need, len(answers), {**_unreachable_nodes(state), **outcomes})
    metrics.count("read", level, "ok")
    if level == "quorum":
        rows, last = _merge(answers, limit)
        return rows, last, None
    node, rows = answers[0]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1][0] if more else None, node
