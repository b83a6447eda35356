"""The probe of one node: its SQL, the threads that run it (one pool per node), and a read-only
query on a node's Django connection that reconnects once when a kept connection turned out dead.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections

PROBE_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       pg_last_wal_replay_lsn()::text,
       pg_last_wal_receive_lsn()::text,
       (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1),
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
       CASE WHEN pg_is_in_recovery() AND pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()
            THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
            ELSE 0 END,
       current_setting('synchronous_standby_names'),
       pg_postmaster_start_time()::text,
       CASE WHEN pg_is_in_recovery()
            THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END
"""
REPLICATION_SQL = """
SELECT application_name, state, sync_state, replay_lsn::text,
       extract(epoch FROM replay_lag)::float8,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8
  FROM pg_stat_replication
"""


# ------------------------------------------------------------------ thread pools per process

_pool_lock = threading.Lock()
_pools: dict[str, ThreadPoolExecutor] = {}
_pools_pid: int | None = None


def pool(node: str) -> ThreadPoolExecutor:
    """Threads that query one node (quorum listings, probes): each keeps one connection to that
    node only, so a worker holds at most KV_READ_POOL_SIZE pooled connections per node, and a
    node that hangs ties up only its own threads."""
    global _pools_pid
    ex = _pools.get(node)
    if ex is not None and _pools_pid == os.getpid():
        return ex
    with _pool_lock:
        if _pools_pid != os.getpid():
            _pools.clear()
            _pools_pid = os.getpid()
        ex = _pools.get(node)
        if ex is None:
            ex = _pools[node] = ThreadPoolExecutor(
                max_workers=settings.KV["READ_POOL_SIZE"], thread_name_prefix=f"kv-{node}")
        return ex



def on_node(alias: str, fn, *args):
    """Run ``fn(*args)``, a read-only query on node ``alias``, in the calling thread.

    A failed connection is closed so that the next use reconnects (threads of the pool never see
    Django's request_finished, which otherwise does this). A kept connection that turns out to
    be dead (the node restarted since) is retried once on a new connection: reads only.
    """
    conn = connections[alias]
    for attempt in (1, 2):
        reused = conn.connection is not None
        try:
            if reused and conn.errors_occurred:
                conn.close()
                reused = False
            return fn(*args)
        except (OperationalError, InterfaceError):
            _close(conn)
            if not reused or attempt == 2:
                raise
        except Exception:
            _close(conn)
            raise
    raise AssertionError("unreachable")


def _close(conn) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def probe(name: str):
    """One row of PROBE_SQL, the primary's REPLICATION_SQL rows (none on a standby), and the
    milliseconds it took."""
    started = time.perf_counter()
    with connections[name].cursor() as cur:
        cur.execute(PROBE_SQL)
        row = cur.fetchone()
        repl = []
        if row[0] is False:
            cur.execute(REPLICATION_SQL)
            repl = cur.fetchall()
    return row, repl, (time.perf_counter() - started) * 1000
