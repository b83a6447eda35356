"""What a read or a write answered: its result, or QuorumUnavailable (the API's 503 body), and
how a node that failed a request is logged and described in that body.

Node failures are logged on ``kv.quorum`` (the logger name is part of the log contract: the
Logstash pipeline and the tests select on it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .nodestate import ClusterState

log = logging.getLogger("kv.quorum")


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


def node_failed(name: str, op: str, level: str, exc: BaseException | str) -> str:
    """Log that node ``name`` failed ``op`` at ``level``; the text for the 503 body."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    log.warning(
        "Node %s - %s failed", name, op,
        extra={"ecs": {"event.action": "quorum_node_failed", "event.outcome": "failure",
                       "kv.node": name, "kv.op": op, "kv.level": level,
                       "error.message": text}},
    )
    return text


def unreachable_nodes(state: ClusterState) -> dict:
    """The nodes that may not serve reads, each with why (a 503 body's ``nodes``)."""
    return {n: f"not eligible: {s.reason or s.role}" for n, s in state.nodes.items()
            if not s.eligible}


def write_nodes(state: ClusterState) -> dict:
    """Every node as a write sees it (a write's 503 body's ``nodes``)."""
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
