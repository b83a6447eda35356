"""Node health and primary discovery.

Every worker process probes every node of KV_DB_NODES at most once per KV_NODE_CACHE_TTL
(concurrently, each probe bounded by KV_READ_TIMEOUT) and keeps the result as a ClusterState:

- the primary is the reachable node with ``pg_is_in_recovery() = false`` on the newest timeline;
  another such node on an older timeline is a ``stale_primary`` and never serves anything;
  two on the same newest timeline is a split brain: no primary until an operator fences one;
- a standby serves reads only while its WAL receiver is streaming on the primary's timeline
  (or, with no primary reachable, on the newest timeline this process has seen); a node left on
  an abandoned timeline cannot stream from the new primary, so it never qualifies;
- ``k`` is KV_SYNC_STANDBYS when set, else parsed from the primary's synchronous_standby_names.

A failover therefore needs no change in the app's configuration: the next probe finds the new
primary on its higher timeline.

The thread pools and the probe's SQL are in kv.probe, the state's types in kv.nodestate, the
quorum configuration check in kv.quorum_config; the choice of nodes from a state is
kv.selection's. This module stays a little over 300 lines: the verdict drawn from one round of
probes (Cluster._build) is one algorithm, read best in one piece.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings

from . import fanout, metrics
from .consistency import parse_lsn, parse_sync_standby_names, quorum_sizes
from .nodestate import ClusterState, NodeStatus
from .probe import on_node, pool, probe, short_error
from .quorum_config import quorum_config_error

log = logging.getLogger("kv.nodes")

# The primary's WAL positions this process saw, one per probe, kept to date a standby's replay
# position (see Cluster._staleness); at the default KV_NODE_CACHE_TTL about 8 minutes of them.
_LSN_SAMPLES = 512

_ticker_lock = threading.Lock()


class Cluster:
    """Cached ClusterState of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: ClusterState | None = None
        self._max_timeline = 0
        self._last_k: int | None = None
        self._config_error: str | None = None  # last verdict of quorum_config_error
        self._inflight: dict[str, Future] = {}
        self._failed: dict[str, float] = {}
        self._probed_at = 0.0  # when the probes of the current state started
        self._ticker_pid: int | None = None  # the process whose _tick thread runs
        # node -> (timeline, postmaster start) when it was last seen streaming on the newest one
        self._verified: dict[str, tuple[int, str | None]] = {}
        # (time.monotonic() before a probe, the primary's WAL position that probe read)
        self._primary_lsns: deque[tuple[float, int]] = deque(maxlen=_LSN_SAMPLES)
        self._lsns_of: tuple[str, int | None] | None = None  # (primary, timeline) sampled

    # -- public
    def state(self, max_age: float | None = None) -> ClusterState:
        """The node states, at most ``max_age`` (default KV_NODE_CACHE_TTL) old.

        A thread per process (``_tick``) refreshes the states whenever they are older than
        KV_NODE_CACHE_TTL, whether requests come or not (a worker whose threads all wait on a
        hung primary, or an idle one, keeps fresh states too). So with the default age a
        request never waits for a probe while the last state is younger than the TTL +
        2 x KV_READ_TIMEOUT: it is served while the refresh runs, and a node that hangs (its
        probe waits out KV_READ_TIMEOUT) slows no request. An explicit ``max_age``, no state
        yet, or one older than that bound, makes the caller refresh (or wait for the running
        refresh).
        """
        ttl = settings.KV["NODE_CACHE_TTL"] if max_age is None else max_age
        st = self._state
        now = time.monotonic()
        if st is not None and now - st.taken_at < ttl:
            return st
        if self._ticker_pid != os.getpid():
            self._start_ticker()
        if (max_age is None and st is not None
                and now - st.taken_at < ttl + 2 * settings.KV["READ_TIMEOUT"]):
            return st
        if self._lock.acquire(blocking=st is None or max_age is None):
            try:
                st = self._state
                if st is None or time.monotonic() - st.taken_at >= ttl:
                    st = self._refresh()
            finally:
                self._lock.release()
        return self._state or st

    def _start_ticker(self) -> None:
        with _ticker_lock:
            if self._ticker_pid == os.getpid():
                return
            threading.Thread(target=self._tick, name="kv-refresh", daemon=True).start()
            self._ticker_pid = os.getpid()

    def _tick(self) -> None:
        """Refresh the states whenever they are older than KV_NODE_CACHE_TTL (read anew each
        round, so a test that raises it holds the states)."""
        while True:
            ttl = settings.KV["NODE_CACHE_TTL"]
            st = self._state
            age = ttl if st is None else time.monotonic() - st.taken_at
            if age < ttl:
                time.sleep(min(ttl - age, 0.25))  # the TTL is read again at least this often
                continue
            if not self._lock.acquire(blocking=False):
                time.sleep(min(0.05, ttl))  # a request is refreshing them right now
                continue
            try:
                self._refresh()
            except Exception:
                log.exception("refreshing the node states failed")
                time.sleep(ttl)
            finally:
                self._lock.release()

    def invalidate(self) -> None:
        self._state = None

    def mark_failed(self, name: str) -> None:
        """A query on ``name`` just failed: try it last until the next probe."""
        self._failed[name] = time.monotonic()

    def suspects(self) -> set[str]:
        """The nodes that failed since the last probe started (a probe that answered before the
        node hung does not clear a later failure); kv.selection asks them last."""
        if not self._failed:
            return set()
        since = self._probed_at
        return {n for n, t in list(self._failed.items()) if t >= since}

    def _refresh(self) -> ClusterState:
        timeout = settings.KV["READ_TIMEOUT"]
        nodes = {n.name: NodeStatus(n.name, f"{n.host}:{n.port}") for n in settings.KV_NODES}
        probed_at = time.monotonic()
        futures: dict[str, Future] = {}
        for name in nodes:
            old = self._inflight.get(name)
            if old is not None and not old.done():
                nodes[name].error = "previous probe still running"
                continue
            fut = pool(name).submit(on_node, name, probe, name)
            self._inflight[name] = futures[name] = fut
        deadline = time.monotonic() + timeout
        # A node whose probe is still silent after the hedge delay goes last in the read order
        # at once (as a read that found it silent would put it), not only when its probe times
        # out: the reads of this process stop asking it first a quarter of the timeout sooner.
        wait(futures.values(), timeout=timeout * fanout.HEDGE_FRACTION)
        for name, fut in futures.items():
            if not fut.done():
                self.mark_failed(name)
        results = {}
        for name, fut in futures.items():
            try:
                results[name] = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                nodes[name].error = f"probe timed out after {timeout}s"
            except Exception as exc:
                nodes[name].error = short_error(exc)
        st = self._build(nodes, results, probed_at)
        self._state = st
        self._probed_at = probed_at
        self._failed = {n: t for n, t in list(self._failed.items()) if t >= probed_at}
        return st

    def _staleness(self, replay: int, primary_lsn: int, since_replay: float | None,
                   ) -> float | None:
        """Seconds of primary commits a standby at WAL position ``replay`` may be missing, an
        upper bound: 0 when it has replayed what the primary had at this probe; else the age
        of the newest earlier probe whose primary position it has replayed, or of its last
        replayed commit (``since_replay``), the smaller. Both stop moving forward when its WAL
        receiver, its replay or the primary's sender stops, whatever pg_stat_replication and
        pg_stat_wal_receiver still say. None: no bound known."""
        if replay >= primary_lsn:
            return 0.0
        bounds = [since_replay] if since_replay is not None else []
        now = time.monotonic()
        for taken, lsn in reversed(self._primary_lsns):
            if lsn <= replay:
                bounds.append(now - taken)
                break
        return max(0.0, min(bounds)) if bounds else None

    def _build(self, nodes: dict[str, NodeStatus], results: dict,
               probed_at: float | None = None) -> ClusterState:
        problems: list[str] = []
        repl_rows: dict[str, list] = {}
        for name, (row, repl, ms) in results.items():
            s = nodes[name]
            s.reachable = True
            s.probe_ms = round(ms, 3)
            (in_rec, cur_lsn, tl, replay, receive, recv_tli, recv_status, standby_lag, ssn,
             started, since_replay) = row
            s._started = started
            s._since_replay = since_replay
            s.in_recovery = in_rec
            s.current_lsn, s.replay_lsn, s.receive_lsn = cur_lsn, replay, receive
            s.receiver_status = recv_status
            s.sync_standby_names = ssn
            s._standby_lag = float(standby_lag or 0.0)
            s.timeline = tl if not in_rec else recv_tli
            if not in_rec:
                repl_rows[name] = repl
        primaries = [n for n in repl_rows if nodes[n].timeline is not None]
        newest_tl = max([nodes[n].timeline for n in primaries] + [self._max_timeline, 0])
        primary = None
        top = [n for n in primaries if nodes[n].timeline == newest_tl]
        if len(top) == 1:
            primary = top[0]
        elif len(top) > 1:
            problems.append(f"split brain: {', '.join(top)} all accept writes on timeline "
                            f"{newest_tl}; fence all but one")
        for n in primaries:
            if n != primary:
                nodes[n].role = "split_brain" if n in top else "stale_primary"
                nodes[n].reason = f"primary on timeline {nodes[n].timeline}, newest is {newest_tl}"
        if newest_tl:
            self._max_timeline = max(self._max_timeline, newest_tl)

        k = settings.KV["SYNC_STANDBYS"]
        sync_streaming = 0
        if primary is not None:
            p = nodes[primary]
            p.role, p.eligible, p.lag_seconds, p.lag_bytes = "primary", True, 0.0, 0
            if k is None:
                k = parse_sync_standby_names(p.sync_standby_names or "")[0]
                self._last_k = k
            p_lsn = parse_lsn(p.current_lsn)
            null_states = 0
            for app_name, state, sync_state, _replay, replay_lag, lag_bytes in repl_rows[primary]:
                if state is None:
                    null_states += 1
                    continue
                if state == "streaming" and sync_state in ("sync", "quorum"):
                    sync_streaming += 1
                s = nodes.get(app_name)
                if s is not None and s.in_recovery:
                    s.replication_state, s.sync_state = state, sync_state
                    s.lag_seconds = max(float(replay_lag or 0.0), s._standby_lag)
                    if lag_bytes is not None:
                        s.lag_bytes = max(0, int(lag_bytes))
            if null_states:
                problems.append("pg_stat_replication hides its columns from the app's database "
                                "role: grant it pg_read_all_stats")
            for s in nodes.values():
                if s.in_recovery and s.lag_bytes is None and p_lsn is not None and s.replay_lsn:
                    s.lag_bytes = max(0, p_lsn - (parse_lsn(s.replay_lsn) or 0))
            if p_lsn is not None:
                if self._lsns_of != (primary, p.timeline):
                    self._primary_lsns.clear()
                    self._lsns_of = (primary, p.timeline)
                for s in nodes.values():
                    replay = parse_lsn(s.replay_lsn) if s.in_recovery else None
                    stale = None if replay is None else self._staleness(
                        replay, p_lsn, s._since_replay)
                    if stale is not None:
                        s.lag_seconds = max(stale, s.lag_seconds or 0.0, s._standby_lag)
                if probed_at is not None:
                    self._primary_lsns.append((probed_at, p_lsn))
        elif k is None:
            k = self._last_k if self._last_k is not None else len(nodes) // 2
            problems.append("no primary reachable")

        for s in nodes.values():
            if not s.in_recovery or not s.reachable:
                if not s.reachable:
                    s.reason = s.error
                continue
            s.role = "standby"
            if s.lag_seconds is None:
                s.lag_seconds = s._standby_lag
            if s.receiver_status == "streaming" and s.timeline == newest_tl:
                s.eligible = True
                self._verified[s.name] = (newest_tl, s._started)
            elif s.receiver_status == "streaming":
                s.reason = f"on timeline {s.timeline}, current is {newest_tl}"
            elif (primary is None and newest_tl
                  and self._verified.get(s.name) == (newest_tl, s._started)):
                # No primary to stream from (it is down, or a failover is under way). This
                # process saw the node streaming on the newest timeline since its last restart,
                # and a standby cannot change timeline without streaming again: it may serve
                # reads. Its lag is the time since its last replayed commit (an upper bound).
                s.eligible = True
                s.reason = "not streaming: no primary reachable; verified on the newest timeline"
                s.lag_seconds = s._since_replay if s._since_replay is not None else None
            else:
                s.reason = f"WAL receiver not streaming ({s.receiver_status or 'none'})"
            if s.lag_seconds is not None:
                metrics.REPLICA_LAG_SECONDS.labels(node=s.name).set(s.lag_seconds)
            if s.lag_bytes is not None:
                metrics.REPLICA_LAG_BYTES.labels(node=s.name).set(s.lag_bytes)

        q = quorum_sizes(len(nodes), k)
        if primary is not None and sync_streaming < q.k:
            problems.append(f"{sync_streaming} synchronous standbys streaming, {q.k} needed")
        if primary is not None:  # else the last verdict stands
            error = quorum_config_error(q, primary, nodes[primary].sync_standby_names or "",
                                        repl_rows[primary], nodes)
            if error != self._config_error:
                if error is not None:
                    log.error("Quorum requests refused: %s", error,
                              extra={"ecs": {"event.action": "quorum_config_invalid",
                                             "event.outcome": "failure"}})
                else:
                    log.warning("Quorum configuration consistent again: quorum requests served")
                self._config_error = error
        if self._config_error is not None:
            problems.append(self._config_error)
        return ClusterState(nodes, primary, newest_tl or None, q, sync_streaming, problems,
                            time.monotonic(), time.time(), self._config_error)


CLUSTER = Cluster()
