"""Jepsen-style fault harness for the lab: concurrent clients through the balancer, a recorded
history, one fault at a time (injected, held, healed), then the checker's verdict.

Everything here is bounded: a client stops at its deadline or after ``max_ops``; every wait has a
timeout; traffic goes only to the lab's containers. Every fault heals in a ``finally``.

The package by concern: ``config`` (paths, bounds), ``lab`` (access to the lab), ``workload``
(clients and the history), ``faults`` and ``failover`` (the fault catalogue, with ``history``
for what a failover's history says), ``catalogue`` (names and order), ``runner`` (one fault end
to end), ``report`` (figures and tables). Everything is re-exported here: tests use
``harness.<name>``.
"""

from __future__ import annotations

from .catalogue import FAULTS, ORDER  # noqa: F401
from .config import (  # noqa: F401
    DEADLINE_MARGIN,
    INDEPENDENT_RATE,
    INDEPENDENT_READERS,
    INVENTORY,
    LATENCY_FLOOR,
    PURGE_COMMAND,
    PURGE_HORIZON,
    PY_BIN,
    READ_LEVELS,
    RESULTS,
    ROOT,
    VAULT,
    VAULT_PASSWORD,
    env_float,
)
from .failover import (  # noqa: F401
    BETWEEN_KILLS,
    KILLS,
    NEW_PRIMARY_TIMEOUT,
    PROBE_SLACK,
    REJOIN_TIMEOUT,
    THAW_WRITES,
    _end_backstop,
    _etcd,
    _etcd_all,
    _heal_rejoin,
    _kill_postgres,
    _pg_state,
    _rejoined_check,
    _require_patroni,
    _same_primary_check,
    _sample_primaries,
    _take_primary,
    _unpause_backstop,
    _wait_new_primary,
    _wait_rejoined,
    etcd_member_down,
    etcd_quorum_lost,
    pg_state,
    primary_host_frozen,
    primary_host_killed,
    primary_killed,
    primary_network_cut,
    switchover_under_load,
    two_failovers,
)
from .faults import (  # noqa: F401
    PATRONI_CONFIG,
    PATRONI_UNIT,
    PG_COMM,
    PURGE_GAP,
    PURGE_KEYS,
    PURGE_READ_SECONDS,
    SET_APPLY_DELAY,
    Fault,
    _backstop,
    _cancel_backstop,
    _cut_network,
    _freeze_pg,
    _hold,
    _psql,
    _read_keys,
    _restore_network,
    _signal_pg,
    _start_pg,
    _stop_pg,
    _thaw_pg,
    _wait_eligible,
    _walreceiver_pid,
    app_host_stopped,
    app_instance_killed,
    both_standbys_stopped,
    one_standby_frozen,
    one_standby_stopped,
    primary_frozen,
    probe_workers_free,
    reset_apply_delay,
    standby_down_past_purge,
    standby_network_cut,
    standby_receiver_stopped,
)
from .history import (  # noqa: F401
    DOCUMENTED_503,
    median,
    missing_acknowledged,
    rto_figures,
    rto_seconds,
    split_brain_writes,
    timeline_of,
    two_primaries,
    undocumented_write_failures,
)
from .lab import Lab, dexec, playbook, read_tokens, run  # noqa: F401
from .report import COLUMNS, _cell, flat_figures, markdown, table, update_report  # noqa: F401
from .runner import (  # noqa: F401
    count_worker_timeouts,
    deadline_overshoot,
    elapsed,
    independent_latency,
    latency_bound,
    longest_gap,
    p99,
    run_fault,
    unavailability,
    worker_timeouts,
)
from .workload import Recorder, Workload, _json, _pick  # noqa: F401
