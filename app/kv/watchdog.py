"""Deadlines for quorum writes.

PostgreSQL never times out a commit that waits for standbys (statement_timeout does not apply to
that wait), so each write arms a deadline here; when it passes, one thread per process calls
``connection.cancel()``. ``disarm`` holds the same lock as the firing, so once it returns no
cancel for that write can be sent any more (a late cancel could hit the connection's next query).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time

log = logging.getLogger("kv.watchdog")


class Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, object] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="kv-watchdog", daemon=True)
            self._thread.start()

    def arm(self, timeout: float, cancel) -> int:
        with self._cond:
            self._ensure_thread()
            token = next(self._ids)
            self._armed[token] = cancel
            heapq.heappush(self._heap, (time.monotonic() + timeout, token))
            self._cond.notify()
            return token

    def disarm(self, token: int) -> bool:
        """Forget the deadline; True if it had fired (the cancel was sent)."""
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(timeout=60)
                    continue
                when, token = self._heap[0]
                delay = when - time.monotonic()
                if delay > 0:
                    self._cond.wait(timeout=delay)
                    continue
                heapq.heappop(self._heap)
                cancel = self._armed.pop(token, None)
                if cancel is None:
                    continue
                self._fired.add(token)
                try:
                    cancel()
                except Exception:
                    log.exception("cancel request failed")


WATCHDOG = Watchdog()
