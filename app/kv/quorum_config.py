"""Whether R + W > N can hold with the primary's live settings (quorum requests are refused
while it cannot: kv.selection)."""

from __future__ import annotations

from .consistency import Quorum, parse_sync_standby_names
from .nodestate import NodeStatus

# Names in synchronous_standby_names that no standby can carry: '*' (any standby: compared with
# pg_stat_replication below) and the placeholder Patroni's strict quorum mode sets when it has no
# standby to name (nothing acknowledges, quorum writes wait: the app's 503 paths).
NEVER_ACKNOWLEDGE = {"*", "__patroni_strict_sync_replica_placeholder__"}


def quorum_config_error(q: Quorum, primary: str, ssn: str, repl_rows: list,
                        nodes: dict[str, NodeStatus]) -> str | None:
    """Why R + W > N cannot hold with the primary's live settings, or None.

    A quorum write is acknowledged by the primary and ``k`` standbys that the primary's
    ``synchronous_standby_names`` allows, and a quorum read asks R = N - W + 1 of KV_DB_NODES
    with W = q.k + 1. That read meets every acknowledged write only if the primary really waits
    for q.k standbys (not fewer: KV_SYNC_STANDBYS above its ANY/FIRST k) and every standby that
    can acknowledge is one of KV_DB_NODES (PostgreSQL compares the names case-insensitively).
    """
    real_k, names = parse_sync_standby_names(ssn)
    problems = []
    if q.k > real_k:
        problems.append(
            f"the app counts on {q.k} synchronous standbys per write (KV_SYNC_STANDBYS) but the "
            f"primary {primary} waits for {real_k} (synchronous_standby_names = {ssn!r}): "
            f"set KV_SYNC_STANDBYS to {real_k} or leave it empty")
    known = {n.lower() for n in nodes}
    unknown = {n for n in names if n not in NEVER_ACKNOWLEDGE and n.lower() not in known}
    for app_name, _state, sync_state, *_rest in repl_rows:
        if sync_state in ("sync", "quorum", "potential") and app_name \
                and app_name.lower() not in known:
            unknown.add(app_name)
    if unknown and real_k > 0:
        problems.append(
            f"standby {', '.join(sorted(unknown))} can acknowledge quorum writes (the primary "
            f"{primary}'s synchronous_standby_names = {ssn!r}, pg_stat_replication) but is not "
            "in KV_DB_NODES, so quorum reads never ask it: add it to KV_DB_NODES or remove it "
            "from synchronous_standby_names")
    if not problems:
        return None
    return (f"R + W > N does not hold (N={q.n}, W={q.w}, R={q.r}): " + "; ".join(problems))
