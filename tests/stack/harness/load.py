"""A bounded, paced load generator for the balancer (tests/stack/test_balancer.py: rolling
update and rollback under load).

Each of `threads` workers alternates PUT and GET on its own keys, at most `rate` requests per
second per worker, until stopped, `max_seconds` passed or `max_requests` were sent. Every answer
that is not 2xx (404 for a key not written yet excepted) and every transport error counts as a
failure, with its details kept for the report. One exception: a request sent on a kept-alive
connection that the balancer closed without answering, over HTTP or TLS (the race of a graceful
nginx reload with an idle keep-alive connection, which RFC 9112 section 9.3.1 lets a client
retry) is sent once more on a new connection and counted in `retried`; a second failure counts.
"""

from __future__ import annotations

import collections
import threading
import time

import requests
import urllib3

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def _closed_unanswered(exc: requests.ConnectionError) -> bool:
    """The balancer closed the connection before any answer: over plain HTTP the response is
    missing ("without response"), over TLS the read ends in an EOF without close_notify. Both
    are the graceful-reload race a client may retry an idempotent request after."""
    text = repr(exc)
    return "without response" in text or "EOF occurred in violation of protocol" in text


class Load:
    def __init__(
        self,
        base_url: str,
        token: str,
        threads: int = 4,
        rate: float = 8.0,
        max_seconds: float = 900.0,
        max_requests: int = 50000,
        timeout: float = 10.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.threads = threads
        self.interval = 1.0 / rate
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.timeout = timeout
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failures: list[str] = []
        self.retried = 0
        self.statuses: collections.Counter = collections.Counter()
        self.instances: collections.Counter = collections.Counter()
        self.latencies: list[float] = []
        self._workers: list[threading.Thread] = []
        self.started = 0.0
        self.elapsed = 0.0

    def _worker(self, n: int) -> None:
        session = requests.Session()
        session.trust_env = False  # straight to the balancer: no proxy, no CA bundle from env
        session.verify = False
        deadline = self.started + self.max_seconds
        i = 0
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            with self.lock:
                if self.sent >= self.max_requests:
                    return
                self.sent += 1
            key = f"load-{n}-{(i // 2) % 16}"  # PUT a key, then GET it back
            t0 = time.monotonic()
            try:
                for attempt in (1, 2):
                    try:
                        if i % 2 == 0:
                            r = session.put(
                                f"{self.base_url}/api/kv/{key}",
                                json={"value": {"i": i}},
                                headers=self.headers,
                                timeout=self.timeout,
                            )
                        else:
                            r = session.get(
                                f"{self.base_url}/api/kv/{key}",
                                headers=self.headers,
                                timeout=self.timeout,
                            )
                        break
                    except requests.ConnectionError as exc:
                        if attempt == 2 or not _closed_unanswered(exc):
                            raise
                        with self.lock:
                            self.retried += 1
                good = r.status_code in ((200, 201) if i % 2 == 0 else (200,))
                status = r.status_code
                detail = r.text[:200]
                instance = r.headers.get("X-KV-Instance", "?")
            except requests.RequestException as exc:
                good, status, detail, instance = False, "exception", repr(exc)[:200], "-"
            dt = time.monotonic() - t0
            with self.lock:
                self.statuses[status] += 1
                self.instances[instance] += 1
                self.latencies.append(dt)
                if good:
                    self.ok += 1
                else:
                    self.failures.append(
                        f"{'PUT' if i % 2 == 0 else 'GET'} {key}: {status} {detail}"
                    )
            i += 1
            pause = self.interval - (time.monotonic() - t0)
            if pause > 0:
                self.stop_event.wait(pause)

    def start(self) -> Load:
        self.started = time.monotonic()
        for n in range(self.threads):
            t = threading.Thread(target=self._worker, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> Load:
        self.stop_event.set()
        for t in self._workers:
            t.join(self.timeout + 5)
        self.elapsed = time.monotonic() - self.started
        return self

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]

        def ms(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

        rate = self.sent / max(self.elapsed, 1e-9)
        return (
            f"{self.sent} requests in {self.elapsed:.1f}s ({rate:.1f}/s), "
            f"{self.ok} ok, {len(self.failures)} failed, {self.retried} retried (kept-alive "
            f"connection closed unanswered); statuses {dict(self.statuses)}; "
            f"latency p50 {ms(0.5):.0f} ms, p99 {ms(0.99):.0f} ms, max {ms(1.0):.0f} ms; "
            f"instances {dict(self.instances)}"
        )
