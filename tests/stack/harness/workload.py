"""The workload: concurrent clients through the balancer and the recorded history.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import dataclass, field

import requests

from .lab import Lab

# ------------------------------------------------------------------ clients and the history


@dataclass
class Workload:
    keys: int = 4
    clients: int = 6
    rate: float = 150.0  # total requests per second (nginx limits one address to 200 r/s)
    write_share: float = 0.5
    write_levels: tuple[tuple[str, float], ...] = (("quorum", 0.7), ("one", 0.3))
    read_levels: tuple[tuple[str, float], ...] = (
        ("quorum", 0.35), ("primary", 0.3), ("one", 0.15), ("token", 0.2))
    max_ops: int = 20000  # per client
    write_timeout: float = 5.0  # the app's KV_WRITE_TIMEOUT
    read_timeout: float = 2.0  # the app's KV_READ_TIMEOUT
    node_cache_ttl: float = 1.0  # the app's KV_NODE_CACHE_TTL (how old a measured lag may be)
    one_max_lag: float | None = None  # r=one reads send this max_lag (and the checker bounds them)


def _pick(rnd: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    x = rnd.random() * sum(w for _, w in choices)
    for name, w in choices:
        x -= w
        if x <= 0:
            return name
    return choices[-1][0]


@dataclass
class Recorder:
    lab: Lab
    prefix: str
    wl: Workload
    history: list[dict] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    walls: dict[str, float] = field(default_factory=dict)  # the marks in time.time()
    extra_keys: list[str] = field(default_factory=list)  # keys a fault wrote (final reads too)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def keys(self) -> list[str]:
        return [f"{self.prefix}-k{i}" for i in range(self.wl.keys)]

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()
        self.walls[name] = time.time()

    def record(self, op: dict) -> dict:
        with self._lock:
            op["id"] = next(self._ids)
            self.history.append(op)
        return op

    # one request, classified
    def write(self, s: requests.Session, process: int, key: str, value: str | None,
              level: str) -> dict:
        """A PUT of ``value``; ``value`` None: a DELETE (204, or 404 when already absent)."""
        kind = "write" if value is not None else "delete"
        op = {"process": process, "op": kind, "key": key, "value": value, "level": level}
        if kind == "delete":
            del op["value"]
        op["start"] = time.monotonic()
        try:
            url = f"{self.lab.base}/api/kv/{key}"
            timeout = (2, self.wl.write_timeout + 10)
            if kind == "delete":
                r = s.delete(url, params={"w": level}, timeout=timeout)
            else:
                r = s.put(url, params={"w": level}, json={"value": value}, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            op["end"] = None
            refused = isinstance(exc, requests.ConnectTimeout) or "refused" in str(exc)
            op["outcome"] = "failed" if refused else "indeterminate"
            op["error"] = type(exc).__name__
            op["elapsed"] = time.monotonic() - op["start"]
            return self.record(op)
        op["end"] = time.monotonic()
        op["elapsed"] = op["end"] - op["start"]
        op["status"] = r.status_code
        op["instance"] = r.headers.get("X-KV-Instance")
        op["node"] = r.headers.get("X-KV-Node")  # the primary that took the write
        body = _json(r)
        if kind == "delete" and r.status_code in (204, 404):
            op["outcome"] = "ok"
            op["found"] = r.status_code == 204
        elif r.status_code in (200, 201):
            op["outcome"] = "ok"
            op["version"] = int(body["version"])
            op["token"] = r.headers.get("X-KV-Token")
        elif r.status_code == 503 and body.get("error") == "quorum_unavailable":
            cl = body.get("committed_locally", False)
            op["outcome"] = "failed" if cl is False else "indeterminate"
            op["error"] = "quorum_unavailable" + ("" if cl is False else f" committed_locally={cl}")
            if body.get("version"):
                op["version"] = int(body["version"])
        elif 400 <= r.status_code < 500:
            op["outcome"] = "failed"
            op["error"] = body.get("error") or str(r.status_code)
        else:  # 500, 502, 504, a 503 from elsewhere: may or may not have been applied
            op["outcome"] = "indeterminate"
            op["end"] = None
            op["error"] = body.get("error") or str(r.status_code)
        return self.record(op)

    def read(self, s: requests.Session, process: int, key: str, level: str,
             token_op: dict | None = None, final: bool = False) -> dict:
        op: dict = {"process": process, "op": "read", "key": key, "level": level,
                    "final": final}
        headers = {}
        params: dict = {"r": level}
        if level == "one" and self.wl.one_max_lag is not None:
            params["max_lag"] = f"{self.wl.one_max_lag:g}"
            op["max_lag"] = self.wl.one_max_lag
        if level == "token":
            params = {}
            if token_op is not None and token_op.get("token"):
                headers["X-KV-Token"] = token_op["token"]
                op["token_of"] = token_op["id"]
        op["start"] = time.monotonic()
        try:
            r = s.get(f"{self.lab.base}/api/kv/{key}", params=params, headers=headers,
                      timeout=(2, 10))
        except (requests.ConnectionError, requests.Timeout) as exc:
            op.update(end=time.monotonic(), outcome="failed", error=type(exc).__name__)
            op["elapsed"] = op["end"] - op["start"]
            return self.record(op)
        op["end"] = time.monotonic()
        op["elapsed"] = op["end"] - op["start"]
        op["status"] = r.status_code
        op["instance"] = r.headers.get("X-KV-Instance")
        op["node"] = r.headers.get("X-KV-Node")
        body = _json(r)
        if r.status_code == 200:
            op.update(outcome="ok", found=True, value=body.get("value"),
                      version=int(body["version"]))
        elif r.status_code == 404 and body.get("error") == "not_found":
            op.update(outcome="ok", found=False, value=None)
        else:
            op.update(outcome="failed", error=body.get("error") or str(r.status_code))
        return self.record(op)

    def client(self, process: int, deadline: float, stop: threading.Event) -> None:
        rnd = random.Random(f"{self.prefix}-{process}")
        s = self.lab.session()
        interval = self.wl.clients / self.wl.rate
        last_write: dict[str, dict] = {}
        keys = self.keys()
        n = 0
        try:
            while n < self.wl.max_ops and not stop.is_set() and time.monotonic() < deadline:
                t0 = time.monotonic()
                key = rnd.choice(keys)
                if rnd.random() < self.wl.write_share:
                    value = f"{self.prefix}-p{process}-{n}"
                    op = self.write(s, process, key, value, _pick(rnd, self.wl.write_levels))
                    if op["outcome"] == "ok" and op.get("token"):
                        last_write[key] = op
                else:
                    level = _pick(rnd, self.wl.read_levels)
                    if level == "token" and key not in last_write:
                        level = "quorum"
                    self.read(s, process, key, level, last_write.get(key))
                n += 1
                spare = interval - (time.monotonic() - t0)
                if spare > 0:
                    stop.wait(spare)
        finally:
            s.close()

    def reader(self, process: int, levels: tuple[str, ...], interval: float, deadline: float,
               stop: threading.Event) -> None:
        """Reads only, at ``levels`` (token reads need a client's write: left out), on the
        workload's keys, one every ``interval`` seconds."""
        rnd = random.Random(f"{self.prefix}-reader-{process}")
        levels = tuple(lv for lv in levels if lv != "token")
        if not levels:
            return
        s = self.lab.session()
        keys = self.keys()
        try:
            for _ in range(self.wl.max_ops):
                if stop.is_set() or time.monotonic() >= deadline:
                    return
                t0 = time.monotonic()
                self.read(s, process, rnd.choice(keys), rnd.choice(levels))
                spare = interval - (time.monotonic() - t0)
                if spare > 0:
                    stop.wait(spare)
        finally:
            s.close()

    def final_reads(self, timeout: float = 90) -> None:
        """One ok r=primary read per key, retried (bounded) until the service answers."""
        s = self.lab.session()
        deadline = time.monotonic() + timeout
        for key in self.keys() + self.extra_keys:
            while True:
                op = self.read(s, 999, key, "primary", final=True)
                if op["outcome"] == "ok":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no final read of {key} within {timeout:.0f}s: "
                                       f"{op.get('error')}")
                time.sleep(0.5)
        s.close()


def _json(r: requests.Response) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


