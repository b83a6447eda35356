"""Jepsen-style fault harness for the lab: concurrent clients through the balancer, a recorded
history, one fault at a time (injected, held, healed), then the checker's verdict.

Everything here is bounded: a client stops at its deadline or after ``max_ops``; every wait has a
timeout; traffic goes only to the lab's containers. Every fault heals in a ``finally``.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime
import itertools
import json
import math
import os
import random
import shlex
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3
import yaml

from . import checker

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventory" / "lab"
VAULT = INVENTORY / "group_vars" / "all" / "vault.yml"
VAULT_PASSWORD = INVENTORY / "vault-password.txt"
RESULTS = Path(os.environ.get("KV_CHAOS_RESULTS", ROOT / ".cache" / "chaos"))
PY_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
# The app's documented margin over its deadlines (app/README.md, "Write deadline": a write answers
# within KV_WRITE_TIMEOUT + 1.5 s), held against reads and KV_READ_TIMEOUT as well: no request
# may outlive its deadline by more than this.
DEADLINE_MARGIN = 1.5
# Reads that do not need the faulty node keep their p99 within 2x the baseline's, or within the
# baseline + this floor when that is more (a 3 ms baseline must not make a flaky 6 ms bound).
LATENCY_FLOOR = 0.1
READ_LEVELS = ("quorum", "primary", "one", "token")
# Readers of their own for the reads that do not need the faulty node: the workload's clients
# block on writes while a node is frozen, so they would hardly sample those reads. Reads per
# second in all (the clients' 150 + these + the purge fault's 20 stay under nginx's 200).
INDEPENDENT_READERS = 2
INDEPENDENT_RATE = 16.0
# Seconds a tombstone must be older than for kv_purge_tombstones (the command's minimum, 60).
PURGE_HORIZON = int(os.environ.get("KV_CHAOS_PURGE_HORIZON", "").strip() or 60)
# The purge as app1 runs it (the role's wrapper: the current release, the service's user and
# environment); another release's command can be put here to see the fault catch it.
PURGE_COMMAND = shlex.split(os.environ.get("KV_CHAOS_PURGE_COMMAND", "").strip()
                            or "/usr/local/sbin/kv-manage kv_purge_tombstones")


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def run(cmd: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """A bounded subprocess (docker exec, ansible-playbook)."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and p.returncode != 0:
        out = f"{p.stdout}\n{p.stderr}"
        lines = out.splitlines()
        # ansible: the failed tasks and their messages, not the timing recap
        picked = [ln for i, ln in enumerate(lines)
                  if any(m in ln for m in ("fatal:", "FAILED!", "ERROR!", "msg:"))
                  or any(m in "".join(lines[max(0, i - 3):i]) for m in ("fatal:", "FAILED!"))]
        detail = "\n".join(picked[:40]) if picked else out.strip()[-2000:]
        log = RESULTS / "commands.log"
        RESULTS.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"\n===== {' '.join(cmd)} exited {p.returncode}\n{out}")
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode} (full output in {log}):\n"
                           f"{detail}")
    return p


def dexec(host: str, *cmd: str, timeout: float = 60, check: bool = True):
    return run(["docker", "exec", f"kvlab-{host}", *cmd], timeout=timeout, check=check)


def playbook(name: str, timeout: float = 900, extra: list[str] | None = None):
    path = ROOT / "playbooks" / name
    if not path.is_file():
        raise FileNotFoundError(f"playbooks/{name} does not exist (yet)")
    binary = PY_BIN / "ansible-playbook"
    cmd = [str(binary if binary.exists() else "ansible-playbook"), "-i", str(INVENTORY),
           "--vault-password-file", str(VAULT_PASSWORD), str(path), *(extra or [])]
    env_cmd = ["env", "ANSIBLE_FORCE_COLOR=0", f"ANSIBLE_CONFIG={ROOT / 'ansible.cfg'}", *cmd]
    return run(env_cmd, timeout=timeout)


# ------------------------------------------------------------------ the lab


@dataclass
class Lab:
    base: str
    writer: str
    reader: str | None
    addresses: dict[str, str]
    app_ports: tuple[int, ...] = (8000, 8001, 8002)
    _ttl: float | None = None

    @classmethod
    def from_repo(cls) -> Lab:
        inv = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
        addresses: dict[str, str] = {}

        def walk(group: dict) -> None:
            for name, hv in (group.get("hosts") or {}).items():
                addresses[name] = (hv or {}).get("internal_address", "")
            for child in (group.get("children") or {}).values():
                walk(child or {})

        walk(inv["all"])
        writer = reader = ""
        with contextlib.suppress(Exception):
            writer, reader = read_tokens()
        base = os.environ.get("KV_LAB_URL", f"https://{addresses.get('lb1', '172.30.99.10')}")
        return cls(base=base.rstrip("/"), writer=writer, reader=reader, addresses=addresses)

    def unreachable_reason(self) -> str | None:
        if not self.writer:
            return f"no API token with the write scope could be read from {VAULT}"
        try:
            r = requests.get(f"{self.base}/healthz", verify=False, timeout=5)
        except requests.RequestException as exc:
            return f"{self.base}/healthz does not answer: {type(exc).__name__}"
        if r.status_code != 200:
            return f"{self.base}/healthz answered {r.status_code}"
        try:
            r = self.session().get(f"{self.base}/api/cluster", timeout=5)
        except requests.RequestException as exc:
            return f"/api/cluster does not answer: {type(exc).__name__}"
        if r.status_code != 200:
            return f"/api/cluster answered {r.status_code}: {r.text[:200]}"
        return None

    def app_env(self, name: str, default: float) -> float:
        """A number from /etc/kv/env as deployed on app1 (the app's default otherwise)."""
        p = dexec("app1", "sh", "-c", f"grep -h '^{name}=' /etc/kv/env || true",
                  timeout=20, check=False)
        raw = p.stdout.strip().partition("=")[2].strip().strip("'\"")
        try:
            return float(raw) if raw else default
        except ValueError:
            return default

    def write_timeout(self) -> float:
        """KV_WRITE_TIMEOUT as deployed on app1 (the app's default otherwise)."""
        return self.app_env("KV_WRITE_TIMEOUT", 5.0)

    def app_hosts(self) -> list[str]:
        return sorted(h for h in self.addresses if h.startswith("app"))

    def session(self, token: str | None = None) -> requests.Session:
        s = requests.Session()
        # the lab's certificate is self-signed; and a REQUESTS_CA_BUNDLE (or proxy) in the
        # environment would override a session's verify=False: the lab is reached directly
        s.trust_env = False
        s.verify = False
        s.headers["Authorization"] = f"Bearer {token or self.writer}"
        return s

    def cluster(self, timeout: float = 5) -> dict:
        r = self.session().get(f"{self.base}/api/cluster", params={"fresh": "1"},
                               timeout=timeout)
        r.raise_for_status()
        return r.json()

    def primary(self) -> str:
        p = self.cluster().get("primary")
        if not p:
            raise RuntimeError("the cluster has no primary")
        return p

    def standbys(self) -> list[str]:
        c = self.cluster()
        return sorted(n for n in c["nodes"] if n != c["primary"])

    def wait_healthy(self, timeout: float = 120, why: str = "") -> dict:
        """Wait until /readyz says a write and a read quorum are there and every node streams."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                c = self.cluster(timeout=5)
                nodes = c.get("nodes", {})
                want = len(nodes) - 1
                if (c.get("primary") and c.get("write_quorum") and c.get("read_quorum")
                        and c.get("sync_standbys_streaming", 0) >= want
                        and all(n.get("eligible") for n in nodes.values())):
                    return c
                last = {k: c.get(k) for k in ("primary", "sync_standbys_streaming",
                                              "problems")}
                last["not_eligible"] = {n: s.get("reason") for n, s in nodes.items()
                                        if not s.get("eligible")}
            except (requests.RequestException, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(1)
        raise TimeoutError(f"the cluster is not healthy after {timeout:.0f}s {why}: {last}")

    def patroni_ttl(self) -> float:
        """Patroni's ttl from its dynamic configuration (asked on a PostgreSQL host)."""
        if self._ttl is None:
            last = ""
            for host in sorted(self.cluster()["nodes"]):
                p = dexec(host, "patronictl", "show-config", timeout=30, check=False)
                if p.returncode == 0:
                    self._ttl = float((yaml.safe_load(p.stdout) or {}).get("ttl", 30))
                    break
                last = f"{host}: {(p.stdout + p.stderr).strip()[-300:]}"
            else:
                raise RuntimeError(f"patronictl show-config failed on every node: {last}")
        return self._ttl

    def wait_instances(self, host: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        addr = self.addresses[host]
        missing: list[int] = list(self.app_ports)
        while time.monotonic() < deadline:
            missing = []
            for port in self.app_ports:
                try:
                    ok = requests.get(f"http://{addr}:{port}/healthz", timeout=2).ok
                except requests.RequestException:
                    ok = False
                if not ok:
                    missing.append(port)
            if not missing:
                return
            time.sleep(1)
        raise TimeoutError(f"{host}: instances {missing} not answering after {timeout:.0f}s")


def read_tokens() -> tuple[str, str | None]:
    binary = PY_BIN / "ansible-vault"
    p = run([str(binary if binary.exists() else "ansible-vault"), "view",
             "--vault-password-file", str(VAULT_PASSWORD), str(VAULT)], timeout=30)
    data = yaml.safe_load(p.stdout)
    writer = reader = None
    for t in data.get("vault_kv_api_tokens", []):
        scopes = set(t.get("scopes") or [])
        if "write" in scopes and writer is None:
            writer = t["token"]
        elif scopes == {"read"} and reader is None:
            reader = t["token"]
    if not writer:
        raise RuntimeError("no token with the write scope in the lab vault")
    return writer, reader


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


# ------------------------------------------------------------------ faults


@dataclass
class Fault:
    """``inject`` and ``heal`` act on the lab; ``probe`` runs while the fault is held and
    returns findings (a dict) that the test asserts on."""

    name: str
    inject: Callable[[Lab, dict], None]
    heal: Callable[[Lab, dict], None]
    primary_stable: bool = True
    probe: Callable[[Lab, dict, float], dict] | None = None
    heal_timeout: float = 180
    # after the history is checked, outside it: put the lab back as the inventory describes it
    restore: Callable[[Lab, dict], None] | None = None
    # read levels that can be answered without the faulty node: their p99 while the fault is
    # held is compared with the same run's before it (tests/stack/README.md)
    independent_reads: tuple[str, ...] = ()
    # the test asserts the deadline and worker-timeout targets (not only the checker) ...
    targets: bool = False
    # ... and that the independent reads keep their p99 (faults that freeze a node)
    latency_target: bool = False
    # hold at least this long (seconds; from the workload, e.g. past KV_WRITE_TIMEOUT)
    min_hold: Callable[[Workload], float] | None = None
    min_warmup: float = 2.0  # the baseline is measured in the warm-up, after its first second
    one_max_lag: float | None = None  # r=one reads send max_lag during this fault's run
    # hold at least Patroni's ttl + this (seconds): faults whose outcome needs the leader key to
    # expire; ``hold_below_ttl``: at most ttl - this, faults that must not cause a failover
    hold_past_ttl: float | None = None
    hold_below_ttl: float | None = None
    # after the final reads: the fault's own findings that fail the test (a list of sentences)
    check: Callable[[Lab, dict, list[dict]], list[str]] | None = None


# Patroni runs PostgreSQL: stopping its unit makes it stop PostgreSQL cleanly (fast shutdown) and
# starting it starts PostgreSQL again as what the cluster needs (a standby of the leader).
PATRONI_UNIT = "patroni"


def _stop_pg(host: str) -> None:
    dexec(host, "systemctl", "stop", PATRONI_UNIT, timeout=90)


def _start_pg(host: str) -> None:
    dexec(host, "systemctl", "start", PATRONI_UNIT, timeout=90)


def one_standby_stopped() -> Fault:
    def inject(lab: Lab, ctx: dict) -> None:
        ctx["victim"] = lab.standbys()[0]
        _stop_pg(ctx["victim"])

    def heal(lab: Lab, ctx: dict) -> None:
        if "victim" in ctx:
            _start_pg(ctx["victim"])
        lab.wait_healthy(why="after restarting a standby")

    return Fault("one_standby_stopped", inject, heal, independent_reads=READ_LEVELS)


def both_standbys_stopped() -> Fault:
    def inject(lab: Lab, ctx: dict) -> None:
        ctx["victims"] = []
        for host in lab.standbys():
            ctx["victims"].append(host)
            _stop_pg(host)

    def heal(lab: Lab, ctx: dict) -> None:
        for host in ctx.get("victims", []):
            _start_pg(host)
        lab.wait_healthy(why="after restarting both standbys")

    return Fault("both_standbys_stopped", inject, heal, probe=probe_workers_free,
                 independent_reads=("primary",))


def probe_workers_free(lab: Lab, ctx: dict, until: float) -> dict:
    """While quorum writes cannot succeed: /healthz of every instance answers fast, and a quorum
    write and a w=one write each get their answer."""
    s = lab.session()
    worst = 0.0
    failures = []
    quorum: list[tuple[int, float]] = []
    one: list[tuple[int, float]] = []
    # one key per level: a quorum write waiting for its standbys holds its row's lock
    key = f"probe-{uuid.uuid4().hex[:8]}"
    while time.monotonic() < until:
        t0 = time.monotonic()
        try:
            r = s.get(f"{lab.base}/healthz", timeout=5)
            if r.status_code != 200:
                failures.append(r.status_code)
        except requests.RequestException as exc:
            failures.append(type(exc).__name__)
        worst = max(worst, time.monotonic() - t0)
        for level, out in (("quorum", quorum), ("one", one)):
            t0 = time.monotonic()
            try:
                r = s.put(f"{lab.base}/api/kv/{key}-{level}", params={"w": level},
                          json={"value": uuid.uuid4().hex}, timeout=30)
                out.append((r.status_code, time.monotonic() - t0))
            except requests.RequestException:
                out.append((0, time.monotonic() - t0))
        time.sleep(0.3)
    s.close()
    return {"healthz_worst_seconds": round(worst, 3), "healthz_failures": failures,
            "quorum_writes": quorum, "one_writes": one}


def standby_network_cut() -> Fault:
    def inject(lab: Lab, ctx: dict) -> None:
        ctx["victim"] = lab.standbys()[-1]
        _cut_network(ctx["victim"], ctx)

    def heal(lab: Lab, ctx: dict) -> None:
        if "victim" in ctx:
            _restore_network(ctx["victim"], ctx)
        lab.wait_healthy(why="after restoring a standby's network")

    return Fault("standby_network_cut", inject, heal, independent_reads=READ_LEVELS)


def app_instance_killed() -> Fault:
    def inject(lab: Lab, ctx: dict) -> None:
        dexec("app1", "systemctl", "kill", "-s", "KILL", "kv@8001")
        ctx["killed"] = True

    def heal(lab: Lab, ctx: dict) -> None:
        # systemd restarts it (Restart=); start it in case the unit does not
        dexec("app1", "systemctl", "start", "kv@8001", check=False)
        lab.wait_instances("app1")

    return Fault("app_instance_killed", inject, heal, independent_reads=READ_LEVELS)


def app_host_stopped() -> Fault:
    def inject(lab: Lab, ctx: dict) -> None:
        ctx["stopped"] = True
        run(["docker", "stop", "-t", "5", "kvlab-app2"], timeout=60)

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("stopped"):
            run(["docker", "start", "kvlab-app2"], timeout=60)
        lab.wait_instances("app2", timeout=120)

    return Fault("app_host_stopped", inject, heal, independent_reads=READ_LEVELS)


# Freezing: SIGSTOP to every PostgreSQL process of a node (the postmaster and every backend,
# walsender and walreceiver included; `pkill -x postgres` matches their comm, never Patroni's).
# Patroni keeps running: this models a database server that hangs (a stalled disk, a process
# stuck in the kernel) on a host that is otherwise alive, the case the app must ride out, and
# leaves Patroni to react as it would to a hung server (its queries block, it cannot renew the
# leader key). The kernel still completes TCP handshakes into the listen backlog and acknowledges
# data on open connections; the server never answers. Freezing the whole host, Patroni included,
# is `primary_host_frozen` (docker pause). The freeze of the primary is held below Patroni's ttl,
# so no leader election starts and the checker may hold the primary stable; a longer one is a
# failover, which the faults after it cover. `docker exec` still reaches the host to thaw it,
# and a transient systemd timer inside it sends the SIGCONT by itself if the harness dies before
# its `finally`.
PG_COMM = "postgres"


def _backstop(host: str, seconds: float, *cmd: str) -> str:
    """A transient timer in ``host`` that runs ``cmd`` after ``seconds`` (a thaw that happens
    even if this process is killed); returns its unit name for :func:`_cancel_backstop`."""
    unit = f"kvchaos-thaw-{uuid.uuid4().hex[:8]}"
    dexec(host, "systemd-run", "--quiet", f"--unit={unit}", f"--on-active={int(seconds)}s",
          "--timer-property=AccuracySec=1s", *cmd, timeout=20)
    return unit


def _cancel_backstop(host: str, unit: str | None) -> None:
    if unit:
        dexec(host, "systemctl", "stop", f"{unit}.timer", timeout=20, check=False)


def _signal_pg(host: str, signal: str) -> bool:
    """``signal`` to every PostgreSQL process of ``host``; False when none was running."""
    p = dexec(host, "pkill", f"-{signal}", "-x", PG_COMM, timeout=20, check=False)
    if p.returncode not in (0, 1):  # pkill: 1 is "no process matched"
        raise RuntimeError(f"{host}: pkill -{signal} -x {PG_COMM} exited {p.returncode}: "
                           f"{p.stderr.strip()}")
    return p.returncode == 0


def _freeze_pg(host: str, ctx: dict, hold: float) -> None:
    ctx["backstop"] = _backstop(host, hold + 120, "/usr/bin/pkill", "-CONT", "-x", PG_COMM)
    ctx["frozen"] = host
    if not _signal_pg(host, "STOP"):
        raise RuntimeError(f"{host}: no {PG_COMM} process to freeze")
    # again: a backend forked while the first pass went round is stopped by the second
    _signal_pg(host, "STOP")


def _thaw_pg(host: str, ctx: dict) -> None:
    for _ in range(2):
        _signal_pg(host, "CONT")
    _cancel_backstop(host, ctx.get("backstop"))


def _hold(ctx: dict, seconds: float) -> float:
    return max(seconds, ctx.get("hold", seconds))


def primary_frozen() -> Fault:
    """Every PostgreSQL process of the primary stopped for longer than KV_WRITE_TIMEOUT, then
    continued. Quorum reads can be answered by the two standbys (R = 2)."""

    def inject(lab: Lab, ctx: dict) -> None:
        ctx["victim"] = lab.primary()
        _freeze_pg(ctx["victim"], ctx, _hold(ctx, 60))

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("frozen"):
            _thaw_pg(ctx["frozen"], ctx)
        lab.wait_healthy(why="after thawing the primary")

    return Fault("primary_frozen", inject, heal, independent_reads=("quorum",), targets=True,
                 latency_target=True, min_hold=lambda wl: wl.write_timeout + 3, min_warmup=4.0,
                 hold_below_ttl=6.0)


def one_standby_frozen() -> Fault:
    """Every PostgreSQL process of one standby stopped, then continued. Every read level can be
    answered without it: the primary and the other standby make the quorums."""

    def inject(lab: Lab, ctx: dict) -> None:
        ctx["victim"] = lab.standbys()[0]
        _freeze_pg(ctx["victim"], ctx, _hold(ctx, 60))

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("frozen"):
            _thaw_pg(ctx["frozen"], ctx)
        lab.wait_healthy(why="after thawing a standby")

    return Fault("one_standby_frozen", inject, heal, independent_reads=READ_LEVELS,
                 targets=True, latency_target=True, min_warmup=4.0)


def _walreceiver_pid(host: str) -> int:
    p = dexec(host, "ps", "-eo", "pid=,args=", timeout=20)
    pids = [int(line.split(None, 1)[0]) for line in p.stdout.splitlines()
            if "walreceiver" in line and "postgres" in line]
    if len(pids) != 1:
        raise RuntimeError(f"{host}: expected one walreceiver process, found {pids}:\n"
                           f"{p.stdout}")
    return pids[0]


def standby_receiver_stopped() -> Fault:
    """One standby's WAL receiver stopped (SIGSTOP) while the server stays up and answers: it
    serves older and older data while it still looks streaming. r=one reads send max_lag=1 and
    the checker bounds their staleness (lagging_read)."""

    def inject(lab: Lab, ctx: dict) -> None:
        victim = ctx["victim"] = lab.standbys()[0]
        pid = _walreceiver_pid(victim)
        ctx["backstop"] = _backstop(victim, _hold(ctx, 60) + 120, "/bin/kill", "-CONT",
                                    str(pid))
        ctx["walreceiver_pid"] = pid
        dexec(victim, "kill", "-STOP", str(pid), timeout=20)

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("walreceiver_pid"):
            dexec(ctx["victim"], "kill", "-CONT", str(ctx["walreceiver_pid"]), timeout=20,
                  check=False)
            _cancel_backstop(ctx["victim"], ctx.get("backstop"))
        lab.wait_healthy(why="after continuing a standby's WAL receiver")

    return Fault("standby_receiver_stopped", inject, heal, independent_reads=READ_LEVELS,
                 targets=True, min_warmup=4.0, one_max_lag=1.0)


def _psql(host: str, *sql: str, check: bool = True) -> str:
    cmd = ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-d", "postgres"]
    for statement in sql:
        cmd += ["-c", statement]
    return dexec(host, *cmd, timeout=20, check=check).stdout.strip()


# Patroni owns every PostgreSQL setting: it removes recovery settings from postgresql.auto.conf
# (ALTER SYSTEM) when it writes the configuration, at every start. So the apply delay of
# `standby_down_past_purge` goes through the member's own Patroni configuration: a copy of the
# file is kept, the setting added with Patroni's own Python (its virtualenv has PyYAML; the
# harness never reads the file, which holds passwords), and the copy is put back byte for byte
# (owner and mode kept: `cp -p`, then SIGHUP, Patroni's reload) by the heal or, if the harness
# dies, by a transient timer.
PATRONI_CONFIG = "/etc/patroni/patroni.yml"
# sh -c SET_APPLY_DELAY kvchaos <delay> <config>: keep <config>.kvchaos (once), add the setting
SET_APPLY_DELAY = f"""set -eu
exe=$(systemctl show -p ExecStart --value {PATRONI_UNIT} | sed -n 's/.*path=\\([^ ;]*\\).*/\\1/p')
case "$(basename "$exe")" in python*) py=$exe ;; *) py=$(sed -n '1s/^#!//p' "$exe") ;; esac
[ -f "$2.kvchaos" ] || cp -p "$2" "$2.kvchaos"
"$py" - "$2" "$1" <<'PY'
import sys
import yaml
path, delay = sys.argv[1], sys.argv[2]
with open(path) as f:
    config = yaml.safe_load(f)
config.setdefault("postgresql", {{}}).setdefault("parameters", {{}})[
    "recovery_min_apply_delay"] = delay
with open(path, "w") as f:
    yaml.safe_dump(config, f, default_flow_style=False)
PY
"""


def reset_apply_delay(config: str = PATRONI_CONFIG) -> str:
    """sh -c script: put the copy back, Patroni reloads (if it runs). No ``$`` in it: systemd
    expands those in a transient unit's command line."""
    copy = shlex.quote(f"{config}.kvchaos")
    return (f"if [ -f {copy} ]; then cp -p {copy} {shlex.quote(config)} && rm -f {copy} && "
            f"{{ systemctl kill -s HUP --kill-whom=main {PATRONI_UNIT} || true; }}; fi")

PURGE_KEYS = 6
PURGE_GAP = 8.0  # seconds between the standby's stop and the deletes
PURGE_READ_SECONDS = 5.0  # reads of the deleted keys once the standby may serve reads


def standby_down_past_purge() -> Fault:
    """A standby stopped while keys it holds are deleted; the tombstones are purged
    (``kv_purge_tombstones`` on app1, the deletes older than its horizon) while it is down; it
    comes back and those keys are read at r=quorum while it catches up. A deleted key that
    answers 200 is a ``deleted_key_read``.

    Catching up on a minute of this lab's WAL takes well under a second, so the window in which
    the standby streams (and serves reads) without having replayed the deletes would mostly fall
    between two reads. It is held open as a long backlog would: the deletes come ``PURGE_GAP``
    seconds after the stop, and the standby restarts with ``recovery_min_apply_delay`` = D (set
    in its Patroni configuration before the stop, so it holds from its start) exactly D + 1 s
    after its stop: what it had before the stop is applied at once, what was committed after it is
    applied as it was committed, D seconds later, so the deletes only about ``PURGE_GAP`` - 1 s
    after it restarted. The delay is reset before the cluster must be healthy again."""

    def inject(lab: Lab, ctx: dict) -> None:
        rec: Recorder = ctx["recorder"]
        # the restart comes after the hold (which covers the gap, the horizon and the purge)
        delay = ctx["delay"] = int(max(ctx.get("hold", 0), PURGE_GAP + PURGE_HORIZON) + 10)
        victim = ctx["victim"] = lab.standbys()[0]
        keys = [f"{rec.prefix}-gone{i}" for i in range(PURGE_KEYS)]
        rec.extra_keys.extend(keys)
        s = lab.session()
        for k in keys:
            op = rec.write(s, 997, k, f"{k}-live", "quorum")
            if op["outcome"] != "ok":
                raise RuntimeError(f"could not write {k} before the fault: {op.get('error')}")
        lsn = _psql(lab.primary(), "SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + 20
        # the victim holds every live value
        while _psql(victim, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn",
                    check=False) != "t":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{victim} did not replay {lsn} within 20s")
            time.sleep(0.2)
        ctx["delay_set"] = True
        ctx["backstop"] = _backstop(victim, delay + 240, "/bin/sh", "-c", reset_apply_delay())
        dexec(victim, "sh", "-c", SET_APPLY_DELAY, "kvchaos", f"{delay}s", PATRONI_CONFIG,
              timeout=30)
        ctx["stopped"] = True
        _stop_pg(victim)
        ctx["stopped_at"] = time.monotonic()
        time.sleep(PURGE_GAP)
        for k in keys:
            op = rec.write(s, 997, k, None, "quorum")
            if op["outcome"] != "ok":
                raise RuntimeError(f"could not delete {k} with {victim} down: {op.get('error')}")
        ctx["deleted_at"] = time.monotonic()
        s.close()

    def probe(lab: Lab, ctx: dict, until: float) -> dict:
        """Wait until the tombstones are older than the horizon, then purge them."""
        time.sleep(max(0.0, ctx["deleted_at"] + PURGE_HORIZON + 1 - time.monotonic()))
        p = dexec("app1", *PURGE_COMMAND, "--older-than", str(PURGE_HORIZON), timeout=120,
                  check=False)
        # its report (stdout) apart from whatever it logged (stderr), each kept short
        ctx["purge"] = f"exit {p.returncode}: {p.stdout.strip()[-300:]}"
        ctx["purge_stderr"] = p.stderr.strip()[-600:]
        return {"purge": ctx["purge"], "purge_stderr": ctx["purge_stderr"]}

    def heal(lab: Lab, ctx: dict) -> None:
        rec: Recorder = ctx["recorder"]
        victim = ctx.get("victim")
        stop = threading.Event()
        # read the deleted keys while the standby starts and catches up (about 20 reads/s)
        reader = threading.Thread(target=_read_keys, daemon=True,
                                  args=(rec, rec.extra_keys, stop, time.monotonic() + 240))
        try:
            if ctx.get("stopped"):
                delay = ctx["delay"]
                time.sleep(max(0.0, min(delay + 1.0,
                                        ctx["stopped_at"] + delay + 1 - time.monotonic())))
                reader.start()
                _start_pg(victim)
                ctx["eligible_after"] = round(_wait_eligible(lab, victim, 60), 2)
                time.sleep(PURGE_READ_SECONDS)
        finally:
            if ctx.get("delay_set"):
                dexec(victim, "sh", "-c", reset_apply_delay(), timeout=30)
                _cancel_backstop(victim, ctx.get("backstop"))
            try:
                lab.wait_healthy(why="after starting the standby that missed the purge")
                if reader.is_alive():
                    time.sleep(3)
            finally:
                stop.set()
                if reader.is_alive():
                    reader.join(timeout=20)

    return Fault("standby_down_past_purge", inject, heal, probe=probe,
                 independent_reads=READ_LEVELS, targets=True, min_warmup=4.0,
                 min_hold=lambda wl: PURGE_GAP + PURGE_HORIZON + 2.0, heal_timeout=300)


def _wait_eligible(lab: Lab, node: str, timeout: float) -> float:
    """Seconds until /api/cluster says ``node`` may serve reads."""
    t0 = time.monotonic()
    last: object = None
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(requests.RequestException, ValueError):
            last = lab.cluster()["nodes"].get(node)
            if last and last.get("eligible"):
                return time.monotonic() - t0
        time.sleep(0.2)
    raise TimeoutError(f"{node} is not eligible after {timeout:.0f}s: {last}")


def _read_keys(rec: Recorder, keys: list[str], stop: threading.Event, deadline: float) -> None:
    s = rec.lab.session()
    try:
        for n in range(100000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            rec.read(s, 996, keys[n % len(keys)], "quorum")
            stop.wait(0.05)
    finally:
        s.close()


# ------------------------------------------------------------------ failover under Patroni
#
# These faults change the primary (or may): the harness never assumes which node it is, and the
# lab does not go back to the old one. None runs a playbook but `switchover_under_load`, which
# runs `playbooks/switchover.yml` because the planned switchover is what it tests. Each records
# in ctx["kills"] when it took the primary away and the timeline then; the report derives the
# RTO from the history (:func:`rto_seconds`).

KILLS = max(1, int(env_float("KV_CHAOS_KILLS", 5)))
# Seconds the clients write on the healthy cluster between two kills of `primary_killed`.
BETWEEN_KILLS = 2.0
# How long a new primary may take to acknowledge its first quorum write before the fault
# fails (far above Patroni's ttl + its promotion; only a bound on a wait, not a target).
NEW_PRIMARY_TIMEOUT = 120.0
# How long an old primary (or a killed host) may take to come back as a streaming standby.
REJOIN_TIMEOUT = 240.0
# The app's documented 503 error codes of a write (docs/api.md, "Errors"; app/README.md).
DOCUMENTED_503 = ("quorum_unavailable", "database_unavailable")
# `primary_network_cut`: a docker exec probe takes up to about a second on a loaded machine, so
# the demotion is seen up to this long after it happened.
PROBE_SLACK = 1.0
# w=one writes right after a frozen primary thaws, each to a key of its own.
THAW_WRITES = 20


def timeline_of(version: int) -> int:
    """The PostgreSQL timeline in a version (``timeline << 40 | counter``, app/kv/consistency)."""
    return int(version) >> 40


def rto_seconds(history: list[dict], at: float, timeline: int) -> float | None:
    """Seconds from ``at`` (the primary taken away, on ``timeline``) to the end of the first
    ``w=quorum`` write acknowledged on a later timeline, i.e. by a new primary; None if none."""
    ends = [o["end"] for o in history
            if o["op"] == "write" and o["level"] == "quorum" and o["outcome"] == "ok"
            and o.get("end") is not None and o.get("version") is not None
            and o["end"] >= at and timeline_of(o["version"]) > timeline]
    return round(min(ends) - at, 3) if ends else None


def median(values: list[float]) -> float | None:
    """The median (the mean of the two middle values for an even count); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def rto_figures(history: list[dict], kills: list[dict]) -> dict:
    """Per kill (``{"at", "timeline", "victim"}``): its RTO; their median and maximum. A kill
    with no new primary's quorum write after it has RTO None and counts as missing."""
    rtos = [rto_seconds(history, k["at"], k["timeline"]) for k in kills]
    got = [r for r in rtos if r is not None]
    return {"rtos": rtos, "missing": len(rtos) - len(got),
            "median": None if not got else round(median(got), 3),
            "max": max(got) if got else None}


def split_brain_writes(history: list[dict]) -> list[dict]:
    """Writes acknowledged by a stale primary: an ok write (any level) on a timeline below the
    timeline of an ok write that had already been acknowledged when it began. Once a new
    primary has acknowledged a write, no client may get an acknowledgement from the old one."""
    acked = sorted((o for o in history if o["op"] == "write" and o["outcome"] == "ok"
                    and o.get("version") is not None and o.get("end") is not None),
                   key=lambda o: o["end"])
    newest: list[int] = []  # the highest timeline acknowledged up to each end
    for o in acked:
        newest.append(max(timeline_of(o["version"]), newest[-1] if newest else 0))
    ends = [o["end"] for o in acked]
    out = []
    for o in acked:
        i = bisect.bisect_left(ends, o["start"])  # acknowledged strictly before o began
        if i and newest[i - 1] > timeline_of(o["version"]):
            out.append(o)
    return out


def missing_acknowledged(history: list[dict], select: Callable[[dict], bool]) -> list[dict]:
    """The selected ok writes whose key's final read returned an older version (or no ok final
    read at all): acknowledged, then lost."""
    final: dict[str, int] = {}
    for o in history:
        if o["op"] == "read" and o.get("final") and o["outcome"] == "ok":
            final[o["key"]] = max(final.get(o["key"], 0), int(o.get("version") or 0))
    return [o for o in history
            if o["op"] == "write" and o["outcome"] == "ok" and select(o)
            and (o["key"] not in final or final[o["key"]] < int(o["version"]))]


def undocumented_write_failures(history: list[dict], level: str = "quorum") -> list[dict]:
    """Writes at ``level`` that did not succeed and were not answered with one of the app's
    documented 503s (a timeout, a cut connection, a 502/504 from the balancer, a 500)."""
    return [o for o in history
            if o["op"] == "write" and o["level"] == level and not o.get("final")
            and o["outcome"] != "ok"
            and not (o.get("status") == 503
                     and str(o.get("error", "")).split(" ")[0] in DOCUMENTED_503)]


def two_primaries(samples: list[dict]) -> list[dict]:
    """Samples (``{"t", "nodes": {node: state}}``, states from :func:`pg_state`) in which more
    than one node ran as a primary."""
    return [s for s in samples if sum(1 for v in s["nodes"].values() if v == "primary") > 1]


def pg_state(returncode: int, stdout: str, stderr: str) -> str:
    """What ``psql -c 'SELECT pg_is_in_recovery()'`` run on a host says of its server:
    ``primary``, ``standby``, ``down`` (psql's exit status 2: no connection to the server: not
    running, starting, shutting down) or ``unknown: <why>`` (anything else)."""
    out = stdout.strip()
    if returncode == 0 and out in ("t", "f"):
        return "standby" if out == "t" else "primary"
    if returncode == 2:
        return "down"
    return f"unknown: exit {returncode} {(stdout + stderr).strip()[-200:]}"


def _pg_state(host: str) -> str:
    """``pg_is_in_recovery()`` asked on the host itself (docker exec, the local socket)."""
    try:
        p = dexec(host, "runuser", "-u", "postgres", "--", "psql", "-XAtq", "-d", "postgres",
                  "-c", "SELECT pg_is_in_recovery()", timeout=8, check=False)
    except subprocess.TimeoutExpired:
        return "unknown: no answer within 8 s"
    return pg_state(p.returncode, p.stdout, p.stderr)


def _require_patroni(host: str) -> None:
    p = dexec(host, "systemctl", "cat", PATRONI_UNIT, timeout=20, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{host} has no {PATRONI_UNIT}.service: this fault needs the lab on "
                           "Patroni; nothing was injected")


def _take_primary(lab: Lab, ctx: dict, how: Callable[[str], None]) -> str:
    """Note the primary and its timeline, then take it away with ``how``."""
    c = lab.cluster()
    victim = c.get("primary")
    if not victim:
        raise RuntimeError(f"no primary to take away: {c.get('problems')}")
    ctx.setdefault("kills", []).append({"victim": victim, "timeline": int(c["timeline"]),
                                        "at": time.monotonic()})
    ctx["victims"] = sorted({*ctx.get("victims", []), victim})
    how(victim)
    return victim


def _kill_postgres(host: str) -> None:
    # every PostgreSQL process at once, postmaster included; Patroni lives on
    if not _signal_pg(host, "KILL"):
        raise RuntimeError(f"{host}: no {PG_COMM} process to kill")


def _wait_new_primary(rec: Recorder, kill: dict, timeout: float = NEW_PRIMARY_TIMEOUT) -> dict:
    """Wait (bounded) until the clients' history holds a quorum write acknowledged on a
    timeline after the kill's; returns that write."""
    deadline = time.monotonic() + timeout
    seen = 0  # the history only grows: look at each operation once
    while time.monotonic() < deadline:
        with rec._lock:
            ops = rec.history[seen:]
        seen += len(ops)
        found = [o for o in ops if o["op"] == "write" and o["level"] == "quorum"
                 and o["outcome"] == "ok" and o.get("version") is not None
                 and o["end"] >= kill["at"] and timeline_of(o["version"]) > kill["timeline"]]
        if found:
            return min(found, key=lambda o: o["end"])
        time.sleep(0.02)
    raise TimeoutError(f"no quorum write acknowledged by a new primary within {timeout:.0f}s "
                       f"of taking {kill['victim']} away (timeline {kill['timeline']})")


def _wait_rejoined(lab: Lab, node: str, timeout: float = REJOIN_TIMEOUT) -> dict:
    """The cluster healthy with ``node`` a streaming standby on the primary's timeline (by
    itself: nothing is run on it)."""
    deadline = time.monotonic() + timeout
    c = lab.wait_healthy(timeout=timeout, why=f"waiting for {node} to rejoin")
    while True:
        view = c["nodes"].get(node, {})
        if (c.get("primary") != node and view.get("role") == "standby"
                and view.get("timeline") == c.get("timeline") and view.get("eligible")):
            return c
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node} is not a streaming standby on timeline "
                               f"{c.get('timeline')}: {view}")
        time.sleep(1)
        c = lab.wait_healthy(timeout=max(1.0, deadline - time.monotonic()),
                             why=f"waiting for {node} to rejoin")


def _cut_network(host: str, ctx: dict) -> None:
    # netem needs the sch_netem module, which some kernels lack; a pfifo queue of length 0
    # drops every packet the container sends just as well (a silent cut, no resets)
    p = None
    for qdisc in (["netem", "loss", "100%"], ["pfifo", "limit", "0"]):
        p = dexec(host, "tc", "qdisc", "add", "dev", "eth0", "root", *qdisc, check=False)
        if p.returncode == 0:
            ctx["cut"] = " ".join(qdisc)
            return
    raise RuntimeError(f"tc could not cut {host}'s network: {p.stderr.strip() if p else ''}")


def _restore_network(host: str, ctx: dict) -> None:
    if ctx.get("cut"):
        dexec(host, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)


def _rejoined_check(ctx: dict) -> list[str]:
    """Every primary taken away came back as a streaming standby (ctx["rejoined"], set by the
    heal), on the final primary's timeline."""
    out = []
    for v in ctx.get("victims", []):
        if v not in ctx.get("rejoined", []):
            out.append(f"{v} did not rejoin as a streaming standby on the new timeline")
    return out


def _heal_rejoin(lab: Lab, ctx: dict) -> None:
    """Wait until every node taken away is a streaming standby again, on its own."""
    c = lab.wait_healthy(timeout=REJOIN_TIMEOUT, why="after the failover")
    for v in ctx.get("victims", []):
        # a node killed earlier in the run may be the primary again (it rejoined before a
        # later kill, which the run waited for, and was promoted since)
        if v != c.get("primary"):
            c = _wait_rejoined(lab, v)
        ctx.setdefault("rejoined", []).append(v)
    ctx["new_primary"] = c.get("primary")
    ctx["final_timeline"] = c.get("timeline")


def primary_killed() -> Fault:
    """Every PostgreSQL process of the primary SIGKILLed while Patroni lives (its
    primary_start_timeout 0 fails over at once), ``KV_CHAOS_KILLS`` times in one run; between
    two kills the old primary must come back as a streaming standby by itself and the cluster
    be healthy. RTO per kill and their median in the report."""

    def inject(lab: Lab, ctx: dict) -> None:
        _require_patroni(lab.primary())
        _take_primary(lab, ctx, _kill_postgres)

    def probe(lab: Lab, ctx: dict, until: float) -> dict:
        rec: Recorder = ctx["recorder"]
        for _ in range(KILLS - 1):
            _wait_new_primary(rec, ctx["kills"][-1])
            _wait_rejoined(lab, ctx["kills"][-1]["victim"])
            time.sleep(BETWEEN_KILLS)
            _take_primary(lab, ctx, _kill_postgres)
        _wait_new_primary(rec, ctx["kills"][-1])
        return {"kills": len(ctx["kills"])}

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("kills"):
            _heal_rejoin(lab, ctx)

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        out = _rejoined_check(ctx)
        if len(ctx.get("kills", [])) != KILLS:
            out.append(f"{len(ctx.get('kills', []))} kills of the {KILLS} asked")
        return out

    return Fault("primary_killed", inject, heal, primary_stable=False, probe=probe,
                 check=check, heal_timeout=REJOIN_TIMEOUT + KILLS * 180)


def two_failovers() -> Fault:
    """The primary's PostgreSQL killed, and the new primary's killed as soon as it has
    acknowledged its first quorum write: the third node takes over; no quorum write lost."""

    def inject(lab: Lab, ctx: dict) -> None:
        _require_patroni(lab.primary())
        _take_primary(lab, ctx, _kill_postgres)

    def probe(lab: Lab, ctx: dict, until: float) -> dict:
        rec: Recorder = ctx["recorder"]
        first = _wait_new_primary(rec, ctx["kills"][0])
        second = first.get("node") or lab.primary()
        ctx["kills"].append({"victim": second, "timeline": timeline_of(first["version"]),
                             "at": time.monotonic()})
        ctx["victims"] = sorted({*ctx["victims"], second})
        _kill_postgres(second)
        _wait_new_primary(rec, ctx["kills"][1])
        return {"second_victim": second}

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("kills"):
            _heal_rejoin(lab, ctx)

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        out = _rejoined_check(ctx)
        if len(ctx.get("kills", [])) != 2:
            out.append(f"{len(ctx.get('kills', []))} kills of the 2 asked")
        return out

    return Fault("two_failovers", inject, heal, primary_stable=False, probe=probe, check=check,
                 heal_timeout=REJOIN_TIMEOUT * 2)


def primary_host_killed() -> Fault:
    """The primary's container killed (docker kill: the host is gone at once, Patroni with it).
    The others elect a leader once its key expires (Patroni's ttl after its last renewal), with
    no operator action; `docker start` brings the host back and it rejoins as a standby on its
    own (pg_rewind where its WAL went past the new timeline's fork)."""

    def inject(lab: Lab, ctx: dict) -> None:
        _require_patroni(lab.primary())
        _take_primary(lab, ctx, lambda v: run(["docker", "kill", f"kvlab-{v}"], timeout=60))
        ctx["killed"] = ctx["kills"][0]["victim"]

    def probe(lab: Lab, ctx: dict, until: float) -> dict:
        _wait_new_primary(ctx["recorder"], ctx["kills"][0])
        return {}

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("killed"):
            run(["docker", "start", f"kvlab-{ctx['killed']}"], timeout=120)
            _heal_rejoin(lab, ctx)

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        return _rejoined_check(ctx)

    return Fault("primary_host_killed", inject, heal, primary_stable=False, probe=probe,
                 check=check, heal_timeout=REJOIN_TIMEOUT + 120)


def _unpause_backstop(container: str, seconds: float) -> subprocess.Popen:
    """A detached `sleep; docker unpause` in a session of its own: it unpauses the container
    even if this process dies; the heal ends it (by its process group) once it has unpaused."""
    return subprocess.Popen(
        ["sh", "-c", f"sleep {int(seconds)}; exec docker unpause {shlex.quote(container)}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def _end_backstop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def primary_host_frozen() -> Fault:
    """The primary's container paused (every process of the host frozen, Patroni with it) for
    Patroni's ttl + 10 s: the others elect a leader. Unpaused, the old primary must demote
    itself and never acknowledge a write again: ``THAW_WRITES`` w=one writes sent right after
    the thaw, each to a key of its own, must all be in the final state, and the old node must
    come back as a standby on the new timeline."""

    def inject(lab: Lab, ctx: dict) -> None:
        victim = lab.primary()
        _require_patroni(victim)
        ctx["backstop_proc"] = _unpause_backstop(f"kvlab-{victim}", _hold(ctx, 60) + 120)
        _take_primary(lab, ctx, lambda v: run(["docker", "pause", f"kvlab-{v}"], timeout=60))
        ctx["paused"] = victim

    def probe(lab: Lab, ctx: dict, until: float) -> dict:
        _wait_new_primary(ctx["recorder"], ctx["kills"][0])
        return {}

    def heal(lab: Lab, ctx: dict) -> None:
        rec: Recorder = ctx["recorder"]
        try:
            if ctx.get("paused"):
                run(["docker", "unpause", f"kvlab-{ctx['paused']}"], timeout=60)
                ctx["thawed_at"] = time.monotonic()
                s = lab.session()
                try:
                    for i in range(THAW_WRITES):
                        key = f"{rec.prefix}-thaw{i}"
                        rec.extra_keys.append(key)
                        rec.write(s, 995, key, f"{key}-one", "one")
                finally:
                    s.close()
        finally:
            _end_backstop(ctx.pop("backstop_proc", None))
        if ctx.get("kills"):
            _heal_rejoin(lab, ctx)

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        out = _rejoined_check(ctx)
        thaw = [o for o in history if o.get("process") == 995 and o["op"] == "write"]
        ok = [o for o in thaw if o["outcome"] == "ok"]
        ctx["thaw_writes"] = f"{len(ok)} of {len(thaw)} acknowledged"
        if not ok:
            out.append(f"no w=one write acknowledged right after the thaw: "
                       f"{Counter(str(o.get('error')) for o in thaw)}")
        lost = missing_acknowledged(history, lambda o: o.get("process") == 995)
        out += [f"w=one write {o['key']} acknowledged after the thaw (by {o.get('node')}, "
                f"version {o['version']}) is not in the final state" for o in lost]
        stale = [o for o in ok if timeline_of(o["version"]) <= ctx["kills"][0]["timeline"]]
        out += [f"w=one write {o['key']} after the thaw acknowledged on the old timeline by "
                f"{o.get('node')}" for o in stale]
        return out

    return Fault("primary_host_frozen", inject, heal, primary_stable=False, probe=probe,
                 check=check, hold_past_ttl=10.0, heal_timeout=REJOIN_TIMEOUT + 60)


def primary_network_cut() -> Fault:
    """The primary's host cut off the network (every packet it sends dropped): its PostgreSQL
    must stop accepting writes within Patroni's ttl (it cannot renew the leader key nor reach
    the other members for the failsafe; seen locally through docker exec:
    ``pg_is_in_recovery()``, or no PostgreSQL answering), and the others elect a leader.
    Healed, it rejoins as a standby on its own."""

    def inject(lab: Lab, ctx: dict) -> None:
        victim = lab.primary()
        _require_patroni(victim)
        ctx["ttl"] = lab.patroni_ttl()
        # the probe must be able to tell a primary: it answers as one before the cut
        state = _pg_state(victim)
        if state != "primary":
            raise RuntimeError(f"{victim}: asked locally before the cut, its server says "
                               f"{state!r}, not 'primary': nothing was injected")
        _take_primary(lab, ctx, lambda v: _cut_network(v, ctx))
        ctx["isolated"] = ctx["kills"][0]["victim"]

    def probe(lab: Lab, ctx: dict, until: float) -> dict:
        victim, at = ctx["isolated"], ctx["kills"][0]["at"]
        deadline = at + ctx["ttl"] + 30
        ctx["probe_states"] = []
        while time.monotonic() < deadline:
            state = _pg_state(victim)
            if state not in ctx["probe_states"]:
                ctx["probe_states"].append(state)
            if state in ("standby", "down"):  # in recovery, or not running: no writes accepted
                ctx["demoted_after"] = round(time.monotonic() - at, 2)
                ctx["demoted_state"] = state
                break
            time.sleep(0.3)
        _wait_new_primary(ctx["recorder"], ctx["kills"][0])
        return {"demoted_after": ctx.get("demoted_after"),
                "demoted_state": ctx.get("demoted_state")}

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("isolated"):
            _restore_network(ctx["isolated"], ctx)
            _heal_rejoin(lab, ctx)

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        out = _rejoined_check(ctx)
        after = ctx.get("demoted_after")
        if after is None:
            out.append(f"{ctx.get('isolated')} was never seen refusing writes in "
                       f"{ctx.get('ttl', 0) + 30} s after the cut: {ctx.get('probe_states')}")
        elif after > ctx["ttl"] + PROBE_SLACK:
            out.append(f"{ctx['isolated']} stopped accepting writes {after} s after the cut, "
                       f"past Patroni's ttl ({ctx['ttl']} s) + {PROBE_SLACK} s for the probe")
        return out

    return Fault("primary_network_cut", inject, heal, primary_stable=False, probe=probe,
                 check=check, heal_timeout=REJOIN_TIMEOUT + 60)


def _etcd(host: str, action: str) -> None:
    dexec(host, "systemctl", action, "etcd", timeout=120)


def _etcd_all(hosts: list[str], action: str) -> None:
    """``action`` on the etcd members of ``hosts`` at once: a member that starts while the
    cluster has no quorum waits for the others (systemd's start returns when it has joined)."""
    errors: list[BaseException] = []

    def one(h: str) -> None:
        try:
            _etcd(h, action)
        except BaseException as exc:  # reported after every member was tried
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    if errors:
        raise errors[0]


def _same_primary_check(ctx: dict, history: list[dict]) -> list[str]:
    """No failover: the primary and the timeline at the end are those before the fault, and
    quorum writes were acknowledged while the fault was held."""
    out = []
    before, after = ctx.get("before", {}), ctx.get("after", {})
    if (before.get("primary"), before.get("timeline")) != (after.get("primary"),
                                                           after.get("timeline")):
        out.append(f"the primary changed: {before} before, {after} after")
    held = ctx.get("held", (0.0, 0.0))
    n = sum(1 for o in history if o["op"] == "write" and o["level"] == "quorum"
            and o["outcome"] == "ok" and held[0] <= o["start"] and o["end"] <= held[1])
    ctx["quorum_writes_held"] = n
    if not n:
        out.append("no quorum write was acknowledged while the fault was held")
    return out


def _sample_primaries(lab: Lab, until: float, samples: list[dict]) -> None:
    """Ask every PostgreSQL node whether it is in recovery, over and over until ``until``."""
    nodes = sorted(lab.cluster()["nodes"])
    for _ in range(10000):
        if time.monotonic() >= until:
            return
        t0 = time.monotonic()
        samples.append({"t": t0, "nodes": {n: _pg_state(n) for n in nodes}})
        time.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))


def etcd_member_down() -> Fault:
    """etcd stopped on the primary's host (one member of three: the others keep the quorum,
    Patroni there talks to them): no failover, same primary on the same timeline, quorum
    writes go on. Held Patroni's ttl: the leader key would have expired by then."""

    def inject(lab: Lab, ctx: dict) -> None:
        c = lab.cluster()
        ctx["before"] = {"primary": c["primary"], "timeline": c["timeline"]}
        _require_patroni(c["primary"])
        ctx["stopped"] = [c["primary"]]
        _etcd(c["primary"], "stop")
        ctx["held"] = (time.monotonic(), math.inf)

    def heal(lab: Lab, ctx: dict) -> None:
        ctx["held"] = (ctx.get("held", (0.0,))[0], time.monotonic())
        if ctx.get("stopped"):
            _etcd_all(ctx["stopped"], "start")
        c = lab.wait_healthy(why="after starting etcd again")
        ctx["after"] = {"primary": c["primary"], "timeline": c["timeline"]}

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        return _same_primary_check(ctx, history)

    return Fault("etcd_member_down", inject, heal, check=check, hold_past_ttl=0.0,
                 independent_reads=READ_LEVELS)


def etcd_quorum_lost() -> Fault:
    """etcd stopped on both standbys' hosts (two members of three: no quorum, the leader key
    can be neither read nor renewed). Patroni's failsafe mode keeps the primary serving while
    it reaches every member's REST API: quorum writes go on, no failover, and every node's
    ``pg_is_in_recovery()``, sampled twice a second through the hold, never shows two
    primaries. Held Patroni's ttl + 5 s."""

    def inject(lab: Lab, ctx: dict) -> None:
        c = lab.cluster()
        ctx["before"] = {"primary": c["primary"], "timeline": c["timeline"]}
        _require_patroni(c["primary"])
        ctx["stopped"] = []
        for h in sorted(n for n in c["nodes"] if n != c["primary"]):
            ctx["stopped"].append(h)
            _etcd(h, "stop")
        ctx["held"] = (time.monotonic(), math.inf)

    def probe(lab: Lab, ctx: dict, until: float) -> dict:
        samples: list[dict] = []
        _sample_primaries(lab, until, samples)
        ctx["samples"] = len(samples)
        ctx["two_primaries"] = two_primaries(samples)
        # the primary keeps serving: never seen demoted (a sample may go unanswered on a loaded
        # machine: "unknown")
        primary = [x["nodes"].get(ctx["before"]["primary"]) for x in samples]
        ctx["primary_seen"] = primary.count("primary")
        ctx["primary_demoted"] = primary.count("standby") + primary.count("down")
        return {"samples": len(samples), "two_primaries": ctx["two_primaries"][:5],
                "states": dict(Counter(v for s in samples for v in s["nodes"].values()))}

    def heal(lab: Lab, ctx: dict) -> None:
        ctx["held"] = (ctx.get("held", (0.0,))[0], time.monotonic())
        if ctx.get("stopped"):
            _etcd_all(ctx["stopped"], "start")
        c = lab.wait_healthy(why="after starting etcd again")
        ctx["after"] = {"primary": c["primary"], "timeline": c["timeline"]}

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        out = _same_primary_check(ctx, history)
        if not ctx.get("samples"):
            out.append("the nodes were never sampled while etcd had no quorum")
        elif ctx.get("primary_demoted") or not ctx.get("primary_seen"):
            out.append(f"the primary {ctx['before']['primary']} did not keep serving: a standby "
                       f"or down in {ctx.get('primary_demoted')} of {ctx['samples']} samples, "
                       f"a primary in {ctx.get('primary_seen')}")
        out += [f"two primaries at once: {s['nodes']}" for s in ctx.get("two_primaries", [])]
        return out

    return Fault("etcd_quorum_lost", inject, heal, probe=probe, check=check,
                 hold_past_ttl=5.0, independent_reads=READ_LEVELS)


def switchover_under_load() -> Fault:
    """`playbooks/switchover.yml -e switchover_to=<a standby>` while the clients run: a planned
    switchover through Patroni. Every quorum write that did not succeed must have been answered
    with one of the app's documented 503s (no timeout, no 5xx of another kind, no cut
    connection); the standby asked for is the primary afterwards and the old primary a
    streaming standby."""

    def inject(lab: Lab, ctx: dict) -> None:
        if not (ROOT / "playbooks" / "switchover.yml").is_file():
            raise FileNotFoundError("playbooks/switchover.yml is missing: nothing was injected")
        _require_patroni(lab.primary())
        ctx["target"] = lab.standbys()[0]

        def switch(victim: str) -> None:
            t0 = time.monotonic()
            playbook("switchover.yml", timeout=600, extra=["-e", f"switchover_to={ctx['target']}"])
            ctx["playbook_seconds"] = round(time.monotonic() - t0, 1)

        _take_primary(lab, ctx, switch)

    def probe(lab: Lab, ctx: dict, until: float) -> dict:
        _wait_new_primary(ctx["recorder"], ctx["kills"][0])
        return {"playbook_seconds": ctx.get("playbook_seconds")}

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("kills"):
            _heal_rejoin(lab, ctx)

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        out = _rejoined_check(ctx)
        if ctx.get("new_primary") != ctx.get("target"):
            out.append(f"the primary is {ctx.get('new_primary')}, not {ctx.get('target')}")
        bad = undocumented_write_failures(history)
        ctx["undocumented_failures"] = len(bad)
        out += [f"quorum write {o['key']} failed without a documented 503: status "
                f"{o.get('status')} {o.get('error')} after {round(elapsed(o) or 0, 2)} s"
                for o in bad[:10]]
        return out

    return Fault("switchover_under_load", inject, heal, primary_stable=False, probe=probe,
                 check=check, heal_timeout=REJOIN_TIMEOUT + 600)


FAULTS: dict[str, Callable[[], Fault]] = {
    f.__name__: f for f in (one_standby_stopped, both_standbys_stopped, standby_network_cut,
                            app_instance_killed, app_host_stopped, primary_frozen,
                            one_standby_frozen, standby_receiver_stopped,
                            standby_down_past_purge, etcd_member_down, etcd_quorum_lost,
                            switchover_under_load, primary_killed, two_failovers,
                            primary_network_cut, primary_host_frozen, primary_host_killed)
}
# The faults that keep the primary first (the checker holds them to the stricter rules of a
# stable primary), then those that change it; none of them assumes which node is the primary.
ORDER = ["one_standby_stopped", "both_standbys_stopped", "standby_network_cut",
         "app_instance_killed", "app_host_stopped", "primary_frozen", "one_standby_frozen",
         "standby_receiver_stopped", "standby_down_past_purge", "etcd_member_down",
         "etcd_quorum_lost", "switchover_under_load", "primary_killed", "two_failovers",
         "primary_network_cut", "primary_host_frozen", "primary_host_killed"]


# ------------------------------------------------------------------ one fault, end to end


def longest_gap(history: list[dict], since: float, until: float,
                select: Callable[[dict], bool]) -> float:
    """Longest period in [since, until] in which no selected operation completed ok."""
    ends = sorted(o["end"] for o in history if select(o) and o["outcome"] == "ok"
                  and o.get("end") and since <= o["end"] <= until)
    points = [since, *ends, until]
    return round(max(b - a for a, b in itertools.pairwise(points)), 3)


def unavailability(history: list[dict], since: float, until: float) -> float:
    """Longest period in [since, until] with no quorum write completing successfully."""
    return longest_gap(history, since, until,
                       lambda o: o["op"] == "write" and o["level"] == "quorum")


def elapsed(op: dict) -> float | None:
    """How long a request took as the client saw it (a client-side timeout included)."""
    if op.get("elapsed") is not None:
        return float(op["elapsed"])
    if op.get("end") is not None:
        return float(op["end"]) - float(op["start"])
    return None


def p99(values: list[float]) -> float | None:
    """The 99th percentile, nearest rank (the smallest value >= 99 % of the values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def latency_bound(baseline: float, floor: float = LATENCY_FLOOR) -> float:
    """The p99 allowed while a fault is held: 2x the baseline, at least baseline + floor."""
    return max(2 * baseline, baseline + floor)


def independent_latency(history: list[dict], levels: tuple[str, ...], marks: dict[str, float],
                        floor: float = LATENCY_FLOOR, detect: float = 0.0) -> dict | None:
    """p99 of the reads at ``levels`` (answered or not) that started during the warm-up after
    its first second (``baseline``), and of those that started while the fault was held, from
    ``detect`` seconds after ``injected`` to ``heal`` (``fault_p99``; with the first ``detect``
    seconds: ``fault_p99_with_detection``); the bound, and the longest gap in the whole hold
    with no such read answered ok."""
    if not levels or "injected" not in marks or "heal" not in marks:
        return None

    def pick(since: float, until: float) -> list[float]:
        out = []
        for o in history:
            if (o["op"] == "read" and not o.get("final") and o["level"] in levels
                    and since <= o["start"] < until):
                e = elapsed(o)
                if e is not None:
                    out.append(e)
        return out

    base = pick(marks["start"] + 1.0, marks["fault"])
    held = pick(marks["injected"] + detect, marks["heal"])
    base_p99, held_p99 = p99(base), p99(held)
    with_detection = p99(pick(marks["injected"], marks["heal"]))
    bound = None if base_p99 is None else latency_bound(base_p99, floor)
    return {
        "levels": list(levels),
        "baseline_reads": len(base),
        "baseline_p99": None if base_p99 is None else round(base_p99, 4),
        "fault_reads": len(held),
        "fault_p99": None if held_p99 is None else round(held_p99, 4),
        "detection_seconds": detect,
        "fault_p99_with_detection": None if with_detection is None else round(with_detection, 4),
        "bound": None if bound is None else round(bound, 4),
        "within_bound": None if bound is None or held_p99 is None else held_p99 <= bound,
        "longest_gap_seconds": longest_gap(
            history, marks["injected"], marks["heal"],
            lambda o: o["op"] == "read" and not o.get("final") and o["level"] in levels),
    }


def deadline_overshoot(history: list[dict], write_timeout: float,
                       read_timeout: float) -> dict:
    """The largest amount by which a request outlived its deadline: KV_WRITE_TIMEOUT for writes
    and deletes, KV_READ_TIMEOUT for reads (every level). Negative: every request answered
    before its deadline. Final reads (retried after the heal) are left out."""
    worst: tuple[float, dict] | None = None
    for o in history:
        e = elapsed(o)
        if o.get("final") or e is None:
            continue
        over = e - (write_timeout if o["op"] in ("write", "delete") else read_timeout)
        if worst is None or over > worst[0]:
            worst = (over, o)
    if worst is None:
        return {"seconds": None, "op": None}
    o = worst[1]
    return {"seconds": round(worst[0], 3),
            "op": {k: o.get(k) for k in ("id", "op", "level", "key", "status", "error",
                                         "outcome", "instance", "node") if o.get(k) is not None}
            | {"elapsed": round(elapsed(o) or 0.0, 3)}}


def count_worker_timeouts(lines: list[str], since: float, until: float) -> int:
    """gunicorn's "WORKER TIMEOUT" lines (the app's ECS JSON logs) with an ``@timestamp`` in
    [since, until] (seconds since the epoch)."""
    n = 0
    for line in lines:
        if "WORKER TIMEOUT" not in line:
            continue
        try:
            stamp = json.loads(line)["@timestamp"]
            t = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if since <= t <= until:
            n += 1
    return n


def worker_timeouts(lab: Lab, since: float, until: float) -> dict[str, int]:
    """Per app host: gunicorn workers killed by its timeout in [since, until] (epoch seconds).
    gunicorn logs to the kv@ units' stdout, which the units append to /var/log/kv/kv-<port>.log;
    the units' journal is searched as well in case a unit logs there."""
    out = {}
    for host in lab.app_hosts():
        p = dexec(host, "sh", "-c", "cat /var/log/kv/kv-*.log 2>/dev/null "
                  "| grep -a 'WORKER TIMEOUT' || true", timeout=30, check=False)
        in_files = count_worker_timeouts(p.stdout.splitlines(), since, until)
        j = dexec(host, "sh", "-c", f"journalctl -q -o cat -u 'kv@*' --since @{int(since)} "
                  f"--until @{math.ceil(until)} 2>/dev/null | grep -ac 'WORKER TIMEOUT' || true",
                  timeout=30, check=False)
        in_journal = int(j.stdout.strip() or 0) if j.stdout.strip().isdigit() else 0
        out[host] = max(in_files, in_journal)
    return out


def run_fault(lab: Lab, fault: Fault, seconds: float, wl: Workload | None = None) -> dict:
    """Clients run through: warm-up, the fault held ``seconds``, its heal, a recovery period.
    Then final reads, the checker, a JSON history and a report entry."""
    wl = wl or Workload(write_timeout=env_float("KV_WRITE_TIMEOUT", 5.0))
    if fault.one_max_lag is not None:
        wl = dataclasses.replace(wl, one_max_lag=fault.one_max_lag)
    prefix = f"chaos-{fault.name}-{uuid.uuid4().hex[:6]}"
    rec = Recorder(lab, prefix, wl)
    # warm-up and recovery follow the asked hold, not a fault's longer minimum
    warm = max(fault.min_warmup, seconds * 0.25)
    recover = max(3.0, seconds * 0.5)
    if fault.min_hold is not None:
        seconds = max(seconds, fault.min_hold(wl))
    if fault.hold_past_ttl is not None:
        seconds = max(seconds, lab.patroni_ttl() + fault.hold_past_ttl)
    if fault.hold_below_ttl is not None:
        seconds = min(seconds, lab.patroni_ttl() - fault.hold_below_ttl)
    ctx: dict = {"recorder": rec, "hold": seconds}
    stop = threading.Event()
    # generous: the clients stop when told (after heal + recovery), this only bounds them
    hard_deadline = time.monotonic() + warm + seconds + fault.heal_timeout + recover + 60
    threads = [threading.Thread(target=rec.client, args=(p, hard_deadline, stop), daemon=True)
               for p in range(wl.clients)]
    if fault.independent_reads:
        interval = INDEPENDENT_READERS / INDEPENDENT_RATE
        threads += [threading.Thread(target=rec.reader, daemon=True, args=(
            100 + p, fault.independent_reads, interval, hard_deadline, stop))
            for p in range(INDEPENDENT_READERS)]
    lab.wait_healthy(timeout=120, why=f"before {fault.name}")
    rec.mark("start")
    for t in threads:
        t.start()
    probe: dict = {}
    error: BaseException | None = None
    try:
        time.sleep(warm)
        rec.mark("fault")
        try:
            fault.inject(lab, ctx)
            rec.mark("injected")
            until = time.monotonic() + seconds
            if fault.probe is not None:
                probe = fault.probe(lab, ctx, until)
            time.sleep(max(0.0, until - time.monotonic()))
        finally:
            rec.mark("heal")
            fault.heal(lab, ctx)
            rec.mark("healed")
        time.sleep(recover)
    except BaseException as exc:  # reported after the clients are stopped
        error = exc
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=wl.write_timeout + 20)
        rec.mark("stopped")
    try:
        rec.final_reads()
    except (TimeoutError, requests.RequestException) as exc:
        error = error or exc
    result = checker.check(rec.history, primary_stable=fault.primary_stable,
                           lag_slack=wl.node_cache_ttl + 1.0)
    problems: list[str] = []
    if fault.check is not None:
        try:
            problems = fault.check(lab, ctx, rec.history)
        except Exception as exc:  # a check that could not run fails the test as well
            problems = [f"the fault's check failed: {type(exc).__name__}: {exc}"]
    rto = rto_figures(rec.history, ctx.get("kills", []))
    split = split_brain_writes(rec.history)
    ops = [o for o in rec.history if not o.get("final")]
    counts = {k: sum(1 for o in ops if o["outcome"] == k)
              for k in ("ok", "failed", "indeterminate")}
    m = rec.marks
    walls = rec.walls
    timeouts_error = None
    try:
        timeouts = worker_timeouts(lab, walls.get("fault", walls["start"]), time.time())
    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # reported; the test fails on it
        timeouts, timeouts_error = None, f"{type(exc).__name__}: {exc}"
    report = {
        "fault": fault.name,
        "seconds_held": seconds,
        "operations": len(ops),
        **counts,
        "quorum_writes_ok": sum(1 for o in ops if o["op"] == "write" and o["level"] == "quorum"
                                and o["outcome"] == "ok"),
        "unavailability_seconds": unavailability(ops, m.get("fault", m["start"]),
                                                 m.get("stopped", time.monotonic())),
        "independent_reads": independent_latency(ops, fault.independent_reads, m,
                                                 detect=wl.read_timeout),
        "deadline_overshoot": deadline_overshoot(ops, wl.write_timeout, wl.read_timeout),
        "deadline_margin": DEADLINE_MARGIN,
        "worker_timeouts_by_host": timeouts,
        "worker_timeouts_error": timeouts_error,
        "phases": {k: round(v - m["start"], 2) for k, v in m.items()},
        "context": {k: v for k, v in ctx.items() if isinstance(v, (str, int, float, list))},
        "probe": probe,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "verdict": "error" if error is not None else "valid" if result.ok else "INVALID",
        "checker": result.summary(),
        "violations": result.violations[:20],
        "rto": rto,
        "lost_writes": result.summary()["violations_by_kind"].get("lost_write", 0),
        "split_brain_writes": len(split),
        "split_brain": [{k: o.get(k) for k in ("id", "key", "level", "version", "node",
                                               "start", "end")} for o in split[:10]],
        "problems": problems,
    }
    report.update(flat_figures(report))
    if fault.restore is not None:
        try:
            fault.restore(lab, ctx)
        except Exception as exc:  # reported; the lab is left as the heal made it
            report["restore_error"] = f"{type(exc).__name__}: {exc}"
            error = error or exc
        report["context"] = {k: v for k, v in ctx.items()
                             if isinstance(v, (str, int, float, list))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{fault.name}.json").write_text(json.dumps(
        {"report": report, "marks": m, "history": rec.history}, indent=1, default=str))
    update_report(report)
    if error is not None:
        raise error
    return report


def flat_figures(report: dict) -> dict:
    """The per-fault figures of the table, flattened from the report's nested entries."""
    lat = report.get("independent_reads") or {}
    over = (report.get("deadline_overshoot") or {}).get("seconds")
    wt = report.get("worker_timeouts_by_host")
    rto = report.get("rto") or {}
    return {
        "rto_seconds": None if not rto.get("rtos") else (
            rto["median"] if len(rto["rtos"]) == 1 else
            f"{rto['median']} ({'/'.join('-' if r is None else str(r) for r in rto['rtos'])})"),
        "p99_baseline_ms": None if lat.get("baseline_p99") is None
        else round(lat["baseline_p99"] * 1000, 1),
        "p99_fault_ms": None if lat.get("fault_p99") is None
        else round(lat["fault_p99"] * 1000, 1),
        "p99_bound_ms": None if lat.get("bound") is None else round(lat["bound"] * 1000, 1),
        "longest_gap_seconds": lat.get("longest_gap_seconds"),
        "deadline_overshoot_seconds": over,
        "worker_timeouts": None if wt is None else sum(wt.values()),
    }


def update_report(entry: dict) -> None:
    path = RESULTS / "report.json"
    data = {}
    if path.is_file():
        with contextlib.suppress(ValueError):
            data = json.loads(path.read_text())
    data[entry["fault"]] = {k: v for k, v in entry.items() if k != "violations"}
    path.write_text(json.dumps(data, indent=1, default=str))
    (RESULTS / "report.md").write_text(markdown(list(data.values())))


COLUMNS = ["fault", "operations", "ok", "failed", "indeterminate", "lost_writes",
           "split_brain_writes", "quorum_writes_ok", "rto_seconds", "unavailability_seconds",
           "p99_baseline_ms", "p99_fault_ms", "p99_bound_ms", "longest_gap_seconds",
           "deadline_overshoot_seconds", "worker_timeouts", "verdict"]


def _cell(entry: dict, col: str) -> str:
    v = entry.get(col)
    return "-" if v is None else str(v)


def table(entries: list[dict]) -> str:
    rows = [COLUMNS] + [[_cell(e, c) for c in COLUMNS] for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     for r in rows)


def markdown(entries: list[dict]) -> str:
    """The same table in Markdown (``report.md`` next to ``report.json``)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(e, c) for c in COLUMNS) + " |" for e in entries]
    return "\n".join(lines) + "\n"
