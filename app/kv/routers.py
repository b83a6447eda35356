"""Database router, in the spirit of the seed's PrimaryReplicaRouter, but driven by the node
states the service discovers itself (kv.nodes) instead of fixed aliases.

- writes go to the current primary (newest timeline);
- ORM reads of KV items go to a healthy standby whose lag is within ``max_lag`` (default
  KV_MAX_LAG), else to the primary; ``routing(node=...)`` pins one node;
- other ORM reads (the management commands' tokens) go to the primary, else to any healthy node;
- requests do not read through the ORM: their reads run on kv.fanout, and r=one takes its node
  order from kv_read_order;
- migrations run on ``default`` only (libpq's multi-host ``target_session_attrs=read-write``).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

from django.conf import settings
from django.db import OperationalError

from .nodes import CLUSTER, ClusterState


class NoPrimary(OperationalError):
    """No node is the primary of the newest timeline right now."""


@dataclass
class Route:
    node: str | None = None  # pin reads to this node
    max_lag: float | None = None
    chosen: str | None = None  # the node the router picked


_route: contextvars.ContextVar[Route | None] = contextvars.ContextVar("kv_route", default=None)


@contextlib.contextmanager
def routing(node: str | None = None, max_lag: float | None = None):
    route = Route(node=node, max_lag=max_lag)
    reset = _route.set(route)
    try:
        yield route
    finally:
        _route.reset(reset)


def kv_read_order(state: ClusterState, max_lag: float | None = None) -> list[str]:
    """Every node an ``r=one`` read may ask, in order: the healthy standbys whose lag is within
    ``max_lag`` (default KV_MAX_LAG; random order, nodes that failed since the last probe last),
    then the primary. Taken from one ClusterState, so that going down the list never waits for
    a refresh of the node states."""
    standbys = state.standbys(max_lag=settings.KV["MAX_LAG"] if max_lag is None else max_lag)
    order = CLUSTER.order(standbys) if len(standbys) > 1 else standbys
    if state.primary is not None:
        order.append(state.primary)
    return order


def kv_read_node(max_lag: float | None = None) -> str:
    """The router's choice for ORM reads of KV items: the first of kv_read_order."""
    order = kv_read_order(CLUSTER.state(), max_lag)
    if not order:
        raise NoPrimary("no healthy PostgreSQL node to read from")
    return order[0]


class NodeRouter:
    def db_for_read(self, model, **hints):
        route = _route.get()
        if route is not None and route.node is not None:
            route.chosen = route.node
            return route.node
        if model._meta.model_name == "kvitem":
            choice = kv_read_node(None if route is None else route.max_lag)
        else:
            state = CLUSTER.state()
            choice = state.primary or next(iter(state.eligible()), None)
            if choice is None:
                raise NoPrimary("no healthy PostgreSQL node to read from")
        if route is not None:
            route.chosen = choice
        return choice

    def db_for_write(self, model, **hints):
        primary = CLUSTER.state().primary
        if primary is None:
            raise NoPrimary("no primary on the newest timeline is reachable")
        return primary

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"
