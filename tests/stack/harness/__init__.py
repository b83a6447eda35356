"""Jepsen-style fault harness for the lab: concurrent clients through the balancer, a recorded
history, one fault at a time (injected, held, healed), then the checker's verdict.

Everything here is bounded: a client stops at its deadline or after ``max_ops``; every wait has a
timeout; traffic goes only to the lab's containers. Every fault heals in a ``finally``.

The package by concern: ``config`` (paths, bounds), ``lab`` (access to the lab), ``workload``
(clients and the history), ``faults`` and ``failover`` (the fault catalogue, with ``history``
for what a failover's history says), ``catalogue`` (names and order), ``runner`` (one fault end
to end), ``report`` (figures and tables),
``load`` (paced PUT/GET load through the balancer). What the tests use is re-exported here
(``harness.<name>``); the faults themselves are reached through ``FAULTS``.
"""

from __future__ import annotations

from .catalogue import FAULTS, ORDER
from .config import (
    DEADLINE_MARGIN,
    INVENTORY,
    PURGE_HORIZON,
    PY_BIN,
    RESULTS,
    ROOT,
    VAULT_PASSWORD,
    env_float,
)
from .failover import _end_backstop, _unpause_backstop, pg_state, shutdown_after
from .faults import SET_APPLY_DELAY, Fault, reset_apply_delay
from .history import (
    median,
    missing_acknowledged,
    rto_figures,
    rto_seconds,
    split_brain_writes,
    timeline_of,
    two_primaries,
    undocumented_write_failures,
)
from .lab import Lab, dexec, playbook, read_tokens, run
from .load import Load
from .report import COLUMNS, flat_figures, markdown, table, update_report
from .runner import (
    count_worker_timeouts,
    deadline_overshoot,
    independent_latency,
    latency_bound,
    p99,
    run_fault,
    unavailability,
)
from .workload import Recorder, Workload

__all__ = [
    "COLUMNS",
    "DEADLINE_MARGIN",
    "FAULTS",
    "INVENTORY",
    "ORDER",
    "PURGE_HORIZON",
    "PY_BIN",
    "RESULTS",
    "ROOT",
    "SET_APPLY_DELAY",
    "VAULT_PASSWORD",
    "Fault",
    "Lab",
    "Load",
    "Recorder",
    "Workload",
    "_end_backstop",
    "_unpause_backstop",
    "count_worker_timeouts",
    "deadline_overshoot",
    "dexec",
    "env_float",
    "flat_figures",
    "independent_latency",
    "latency_bound",
    "markdown",
    "median",
    "missing_acknowledged",
    "p99",
    "pg_state",
    "playbook",
    "read_tokens",
    "reset_apply_delay",
    "rto_figures",
    "rto_seconds",
    "run",
    "run_fault",
    "shutdown_after",
    "split_brain_writes",
    "table",
    "timeline_of",
    "two_primaries",
    "unavailability",
    "undocumented_write_failures",
    "update_report",
]
