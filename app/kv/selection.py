"""Choosing nodes: the one place that decides which PostgreSQL node serves what.

Every choice is made from one ClusterState (kv.nodes), so going down a list of nodes never waits
for a refresh of the node states:

- a read at ``quorum`` asks R of the nodes that may serve reads, at ``primary`` the primary, at
  ``one`` the healthy standbys whose lag is within ``max_lag`` (default KV_MAX_LAG), then the
  primary (``read_order``); the read engine (kv.reads) replaces a node that fails by the next;
- a write goes to the primary of the newest timeline, a quorum write only while R + W > N holds;
- a token lookup asks the primary first, then the other nodes that may serve reads;
- the ORM (kv.routers, the management commands) reads KV items like ``r=one`` and anything else
  from the primary, else from any node that may serve reads;
- within a choice the order is random (it spreads the load) with the nodes that failed since the
  last probe started last.
"""

from __future__ import annotations

import random

from django.conf import settings
from django.db import OperationalError

from . import metrics
from .nodes import CLUSTER
from .nodestate import ClusterState
from .outcomes import QuorumUnavailable, unreachable_nodes, write_nodes


class NoPrimary(OperationalError):
    """No node is the primary of the newest timeline right now."""


def order(names: list[str]) -> list[str]:
    """Random order (spreads load), nodes that failed since the last probe started last."""
    suspect = CLUSTER.suspects()
    fresh = [n for n in names if n not in suspect]
    tail = [n for n in names if n in suspect]
    random.shuffle(fresh)
    random.shuffle(tail)
    return fresh + tail


def read_order(state: ClusterState, max_lag: float | None = None) -> list[str]:
    """Every node an ``r=one`` read may ask, in order: the healthy standbys whose lag is within
    ``max_lag`` (default KV_MAX_LAG; see ``order``), then the primary."""
    standbys = state.standbys(max_lag=settings.KV["MAX_LAG"] if max_lag is None else max_lag)
    out = order(standbys) if len(standbys) > 1 else standbys
    if state.primary is not None:
        out.append(state.primary)
    return out


def refuse_unsafe_quorum(state: ClusterState, op: str, level: str) -> None:
    """A quorum read or write counts on R + W > N: refuse it when the configuration cannot
    give that (ClusterState.config_error; also logged and in /readyz)."""
    if state.config_error is None:
        return
    metrics.count(op, level, "unavailable")
    need = state.quorum.r if op == "read" else state.quorum.w
    raise QuorumUnavailable(f"quorum {op}s are refused: {state.config_error}", need, 0,
                            unreachable_nodes(state))


def read_candidates(state: ClusterState, level: str, max_lag: float) -> tuple[int, list[str]]:
    """(how many nodes must answer, the nodes to ask in order) for a read at ``level``;
    QuorumUnavailable when the level cannot be served at all."""
    if level == "quorum":
        refuse_unsafe_quorum(state, "read", "quorum")
        return state.quorum.r, order(state.eligible())
    if level == "primary":
        if state.primary is None:
            metrics.count("read", level, "unavailable")
            raise QuorumUnavailable("no primary is reachable", 1, 0, unreachable_nodes(state))
        return 1, [state.primary]
    return 1, read_order(state, max_lag)


def write_target(state: ClusterState, op: str, level: str) -> tuple[str, int]:
    """(the primary, how many nodes hold an acknowledged write) for a write at ``level``
    (``op`` as counted: write or delete); QuorumUnavailable when it cannot be served."""
    need = state.quorum.w if level == "quorum" else 1
    if state.primary is None:
        metrics.count(op, level, "unavailable")
        raise QuorumUnavailable("no primary is reachable", need, 0, write_nodes(state))
    if level == "quorum":
        refuse_unsafe_quorum(state, op, level)
    return state.primary, need


def token_lookup_order(state: ClusterState) -> list[str]:
    """The primary first (last when it was found silent since the last probe), then the other
    nodes that may serve reads."""
    others = order([n for n in state.eligible() if n != state.primary])
    if state.primary and state.primary in CLUSTER.suspects():
        return [*others, state.primary]
    return ([state.primary] if state.primary else []) + others


def kv_read_node(max_lag: float | None = None) -> str:
    """The ORM's node for reads of KV items: the first of ``read_order``."""
    nodes = read_order(CLUSTER.state(), max_lag)
    if not nodes:
        raise NoPrimary("no healthy PostgreSQL node to read from")
    return nodes[0]


def other_read_node() -> str:
    """The ORM's node for reads of anything else (API tokens): the primary, else any node that
    may serve reads."""
    state = CLUSTER.state()
    choice = state.primary or next(iter(state.eligible()), None)
    if choice is None:
        raise NoPrimary("no healthy PostgreSQL node to read from")
    return choice


def write_node() -> str:
    """The ORM's node for writes: the primary of the newest timeline."""
    primary = CLUSTER.state().primary
    if primary is None:
        raise NoPrimary("no primary on the newest timeline is reachable")
    return primary
