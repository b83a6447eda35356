"""What the probes found: one NodeStatus per node of KV_DB_NODES and the ClusterState they make
(primary, timeline, quorum sizes, problems), as kv.nodes builds them and /cluster shows them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .consistency import Quorum


@dataclass
class NodeStatus:
    name: str
    address: str
    reachable: bool = False
    error: str | None = None
    role: str = "unreachable"  # primary | standby | stale_primary | split_brain | unreachable
    in_recovery: bool | None = None
    timeline: int | None = None
    current_lsn: str | None = None
    replay_lsn: str | None = None
    receive_lsn: str | None = None
    receiver_status: str | None = None
    replication_state: str | None = None
    sync_state: str | None = None
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    eligible: bool = False  # may serve reads
    reason: str | None = None  # why not eligible
    probe_ms: float | None = None
    sync_standby_names: str | None = field(default=None, repr=False)
    _standby_lag: float = field(default=0.0, repr=False)
    _started: str | None = field(default=None, repr=False)
    _since_replay: float | None = field(default=None, repr=False)

    def public(self) -> dict:
        d = asdict(self)
        d.pop("sync_standby_names")
        d.pop("_standby_lag")
        d.pop("_started")
        d.pop("_since_replay")
        return d


@dataclass
class ClusterState:
    nodes: dict[str, NodeStatus]
    primary: str | None
    timeline: int | None
    quorum: Quorum
    sync_streaming: int
    problems: list[str]
    taken_at: float  # time.monotonic()
    taken_wall: float
    config_error: str | None = None  # why R + W > N cannot hold: quorum requests are refused

    def eligible(self) -> list[str]:
        return [n for n, s in self.nodes.items() if s.eligible]

    def standbys(self, max_lag: float | None = None) -> list[str]:
        out = []
        for name, s in self.nodes.items():
            if not s.eligible or name == self.primary:
                continue
            if max_lag is not None and (s.lag_seconds is None or s.lag_seconds > max_lag):
                continue
            out.append(name)
        return out

    def write_quorum_ok(self) -> bool:
        return self.primary is not None and self.sync_streaming >= self.quorum.k

    def read_quorum_ok(self) -> bool:
        return len(self.eligible()) >= self.quorum.r

    def public(self) -> dict:
        return {
            "primary": self.primary,
            "timeline": self.timeline,
            "n": self.quorum.n,
            "k": self.quorum.k,
            "w": self.quorum.w,
            "r": self.quorum.r,
            "sync_standbys_streaming": self.sync_streaming,
            "write_quorum": self.write_quorum_ok(),
            "read_quorum": self.read_quorum_ok(),
            "problems": self.problems,
            "config_error": self.config_error,
            "age_seconds": round(time.monotonic() - self.taken_at, 3),
            "nodes": {name: s.public() for name, s in self.nodes.items()},
        }
