"""Deadlines for writes.

PostgreSQL never times out a commit that waits for standbys (statement_timeout does not apply to
that wait), drops a cancel request that arrives between two statements, and a frozen server
(stalled disk, paused VM, SIGSTOP: its kernel still accepts and acknowledges) never answers at
all. So every write runs under a deadline kept by one watchdog thread per process:

- at the deadline, and again every CANCEL_INTERVAL while the write has not returned, the
  write's backend gets a cancel request: ``pg_cancel_backend(pid)``, sent by a canceller thread
  over a short-lived connection of its own (libpq's connect timeout, a statement timeout). No
  request thread and not the watchdog wait for the server, and the GIL is free meanwhile
  (psycopg2's ``connection.cancel()`` holds it until the server answers);
- at the deadline + ABANDON_AFTER the write's connection is abandoned: shutdown(2) on a
  duplicate of its socket (never blocks; the duplicate is private to the deadline, so no other
  connection can be hit) makes the request thread's libpq call return at once with an error,
  and the backend is terminated (``pg_terminate_backend``) so that it releases its row lock.

A write thus returns at the latest ABANDON_AFTER after its deadline; MARGIN adds the time to
build the answer on a busy host. A cancel request may land late, on whatever the connection runs
next: a write whose deadline fired closes its connection (kv.writes), so it runs nothing next.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections import deque

import psycopg2
from django.conf import settings

log = logging.getLogger("kv.watchdog")

CANCEL_INTERVAL = 0.25
ABANDON_AFTER = 0.75
MARGIN = 1.5  # a write answers within KV_WRITE_TIMEOUT + MARGIN (app/README.md)
CANCEL_STATEMENT_TIMEOUT_MS = 2000


class Deadline:
    """One write's deadline. ``alias``: the node the write runs on (set once known)."""

    __slots__ = ("abandoned", "alias", "armed", "fired", "pending", "pid", "sock", "when")

    def __init__(self, when: float) -> None:
        self.alias: str | None = None
        self.when = when
        self.armed = True
        self.fired = False  # the deadline passed (a cancel may have been sent)
        self.abandoned = False  # the connection was shut down
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.pending = False  # a cancel request for it is queued


class Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.canceller = Canceller()

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._heap = []
            self._thread = threading.Thread(target=self._run, name="kv-watchdog", daemon=True)
            self._thread.start()

    def arm(self, timeout: float) -> Deadline:
        deadline = Deadline(time.monotonic() + timeout)
        with self._cond:
            self._ensure_thread()
            heapq.heappush(self._heap, (deadline.when, next(self._seq), deadline))
            if self._heap[0][2] is deadline:
                # the earliest deadline now: the thread sleeps until a later one, wake it.
                # Otherwise it wakes in time anyway (no thread switch per write).
                self._cond.notify()
        return deadline

    def attach(self, deadline: Deadline, raw) -> bool:
        """Watch ``raw`` (a psycopg2 connection) for this deadline; False if it has passed."""
        fd = os.dup(raw.fileno())
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            raise
        pid = raw.get_backend_pid()
        with self._cond:
            old, deadline.sock = deadline.sock, None
            if not deadline.fired:
                deadline.sock, deadline.pid = sock, pid
        if old is not None:
            old.close()
        if deadline.sock is not sock:
            sock.close()
            return False
        return True

    def disarm(self, deadline: Deadline) -> bool:
        """Forget the deadline; True if it had fired. Once this returns, the watchdog neither
        cancels nor abandons anything for it any more."""
        with self._cond:
            deadline.armed = False
            sock, deadline.sock = deadline.sock, None
        if sock is not None:
            sock.close()
        return deadline.fired

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and not self._heap[0][2].armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(timeout=60)
                    continue
                when, _seq, deadline = self._heap[0]
                now = time.monotonic()
                if when > now:
                    self._cond.wait(timeout=when - now)
                    continue
                heapq.heappop(self._heap)
                deadline.fired = True
                if now >= deadline.when + ABANDON_AFTER:
                    self._abandon(deadline)
                    continue
                if deadline.pid is not None and not deadline.pending:
                    deadline.pending = True
                    self.canceller.request(deadline, "cancel")
                later = min(now + CANCEL_INTERVAL, deadline.when + ABANDON_AFTER)
                heapq.heappush(self._heap, (later, next(self._seq), deadline))

    def _abandon(self, deadline: Deadline) -> None:
        """Under the lock: shut the write's socket down (the thread's libpq call fails at once)
        and have its backend terminated."""
        deadline.abandoned = True
        if deadline.sock is None:
            return
        with contextlib.suppress(OSError):
            deadline.sock.shutdown(socket.SHUT_RDWR)
        log.warning("abandoned the connection of a write to %s (backend %s): no answer %.2fs "
                    "after its deadline", deadline.alias, deadline.pid, ABANDON_AFTER)
        self.canceller.request(deadline, "terminate")


class Canceller:
    """Sends cancel and terminate requests from its own thread, over a new connection per batch
    (one per node), each bounded by libpq's connect_timeout and a statement timeout."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[tuple[Deadline, str, str, int]] = deque()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def request(self, deadline: Deadline, kind: str) -> None:
        if deadline.alias is None or deadline.pid is None:
            deadline.pending = False
            return
        with self._cond:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._queue.clear()
                self._thread = threading.Thread(target=self._run, name="kv-canceller",
                                                daemon=True)
                self._thread.start()
            self._queue.append((deadline, kind, deadline.alias, deadline.pid))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait(timeout=60)
                batch = list(self._queue)
                self._queue.clear()
            by_node: dict[str, list[tuple[Deadline, str, int]]] = {}
            for deadline, kind, alias, pid in batch:
                by_node.setdefault(alias, []).append((deadline, kind, pid))
            for alias, items in by_node.items():
                try:
                    self._send(alias, items)
                except Exception as exc:
                    log.warning("could not send cancel requests to %s: %s", alias,
                                str(exc).strip().splitlines()[0] if str(exc).strip()
                                else type(exc).__name__)
                finally:
                    for deadline, _kind, _pid in items:
                        deadline.pending = False

    @staticmethod
    def _send(alias: str, items: list[tuple[Deadline, str, int]]) -> None:
        # a terminate is for an abandoned connection: sent whatever the write does since; a
        # cancel only while the write still waits (a late one would hit its next statement)
        if not any(kind == "terminate" or d.armed for d, kind, _pid in items):
            return
        db = settings.DATABASES[alias]
        params = {k: v for k, v in db["OPTIONS"].items() if k != "target_session_attrs"}
        params["application_name"] = f"{params.get('application_name', 'kv-app')}/cancel"
        params["options"] = f"-c statement_timeout={CANCEL_STATEMENT_TIMEOUT_MS}"
        conn = psycopg2.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"],
                                host=db["HOST"], port=db["PORT"], **params)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                terminate = sorted({pid for _d, kind, pid in items if kind == "terminate"})
                if terminate:
                    cur.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) p",
                                [terminate])
                cancel = sorted({pid for d, kind, pid in items
                                 if kind == "cancel" and d.armed and pid not in terminate})
                if cancel:
                    cur.execute("SELECT pg_cancel_backend(p) FROM unnest(%s::int[]) p",
                                [cancel])
        finally:
            conn.close()


WATCHDOG = Watchdog()
