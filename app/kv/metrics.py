"""The service's own Prometheus metrics (names fixed in docs/conventions.md).

In production PROMETHEUS_MULTIPROC_DIR is set, so prometheus_client writes every worker's values
to files there and /metrics aggregates them; gauges keep the most recent value of live workers.
"""

from prometheus_client import Counter, Gauge, Histogram

QUORUM_OPERATIONS = Counter(
    "kv_quorum_operations_total",
    "KV operations by consistency level and quorum outcome.",
    ["op", "level", "outcome"],
)
NODE_READ_DURATION = Histogram(
    "kv_node_read_duration_seconds",
    "Duration of one read query on one PostgreSQL node, as seen by the app.",
    ["node"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
REPLICA_LAG_SECONDS = Gauge(
    "kv_replica_lag_seconds",
    "Replay lag of a standby, as observed by the app's node probe.",
    ["node"],
    multiprocess_mode="livemostrecent",
)
REPLICA_LAG_BYTES = Gauge(
    "kv_replica_lag_bytes",
    "WAL bytes between the primary's current position and a standby's replay position.",
    ["node"],
    multiprocess_mode="livemostrecent",
)


def count(op: str, level: str, outcome: str) -> None:
    key = (op, level, outcome)
    child = _count_children.get(key)
    if child is None:
        child = _count_children[key] = QUORUM_OPERATIONS.labels(op=op, level=level,
                                                                outcome=outcome)
    child.inc()


_read_children: dict[str, object] = {}
_count_children: dict[tuple[str, str, str], object] = {}


def observe_read(node: str, seconds: float) -> None:
    child = _read_children.get(node)
    if child is None:
        child = _read_children[node] = NODE_READ_DURATION.labels(node=node)
    child.observe(seconds)
