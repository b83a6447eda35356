"""Jepsen-style fault harness for the lab: concurrent clients through the balancer, a recorded
history, one fault at a time (injected, held, healed), then the checker's verdict.

Everything here is bounded: a client stops at its deadline or after ``max_ops``; every wait has a
timeout; traffic goes only to the lab's containers. Every fault heals in a ``finally``.
"""

from __future__ import annotations

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


def _stop_pg(host: str) -> None:
    dexec(host, "systemctl", "stop", "postgresql@15-main", timeout=60)


def _start_pg(host: str) -> None:
    dexec(host, "systemctl", "start", "postgresql@15-main", timeout=90)


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
        # netem needs the sch_netem module, which some kernels lack; a pfifo queue of length 0
        # drops every packet the container sends just as well (a silent cut, no resets)
        for qdisc in (["netem", "loss", "100%"], ["pfifo", "limit", "0"]):
            p = dexec(ctx["victim"], "tc", "qdisc", "add", "dev", "eth0", "root", *qdisc,
                      check=False)
            if p.returncode == 0:
                ctx["cut"] = " ".join(qdisc)
                return
        raise RuntimeError(f"tc could not cut {ctx['victim']}'s network: {p.stderr.strip()}")

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("cut"):
            dexec(ctx["victim"], "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
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


def primary_killed_failover() -> Fault:
    def inject(lab: Lab, ctx: dict) -> None:
        for name in ("failover.yml", "rejoin.yml"):
            if not (ROOT / "playbooks" / name).is_file():
                raise FileNotFoundError(f"playbooks/{name} is missing: not killing the primary")
        ctx["old_primary"] = lab.primary()
        ctx["killed_at"] = time.monotonic()
        dexec(ctx["old_primary"], "systemctl", "kill", "-s", "KILL", "postgresql@15-main")
        ctx["killed"] = True
        t0 = time.monotonic()
        playbook("failover.yml", timeout=600)
        ctx["failover_seconds"] = round(time.monotonic() - t0, 1)

    def heal(lab: Lab, ctx: dict) -> None:
        if not ctx.get("killed"):
            return
        t0 = time.monotonic()
        playbook("rejoin.yml", timeout=900)
        ctx["rejoin_seconds"] = round(time.monotonic() - t0, 1)
        c = lab.wait_healthy(timeout=180, why="after the old primary rejoined")
        ctx["new_primary"] = c["primary"]
        old = c["nodes"].get(ctx["old_primary"], {})
        if (c["primary"] == ctx["old_primary"] or old.get("role") != "standby"
                or not old.get("eligible")):
            raise RuntimeError(f"the old primary did not rejoin as a healthy standby: {old}")

    def restore(lab: Lab, ctx: dict) -> None:
        """Switch back to the old primary (a planned switchover, no data loss), so that what
        runs next finds the inventory's topology. KV_CHAOS_SWITCH_BACK=0 keeps the new one."""
        if not ctx.get("killed") or os.environ.get("KV_CHAOS_SWITCH_BACK", "1") == "0":
            return
        if lab.primary() == ctx["old_primary"]:
            return
        t0 = time.monotonic()
        playbook("switchover.yml", timeout=900, extra=["-e", f"switchover_to={ctx['old_primary']}"])
        ctx["switch_back_seconds"] = round(time.monotonic() - t0, 1)
        c = lab.wait_healthy(timeout=180, why="after switching back")
        if c["primary"] != ctx["old_primary"]:
            raise RuntimeError(f"switching back left {c['primary']} as the primary")

    return Fault("primary_killed_failover", inject, heal, primary_stable=False,
                 heal_timeout=1200, restore=restore)


# Freezing: SIGSTOP to every process of the PostgreSQL unit (systemd sends it to the whole
# cgroup, the postmaster and every backend, walsender and walreceiver included). It models a
# server that hangs (a stalled disk, a process stuck in the kernel) on a host that is otherwise
# alive: the kernel still completes TCP handshakes into the listen backlog and acknowledges
# data on open connections, the server never answers. `docker pause` freezes the same way
# (cgroup freezer) but takes the whole host with it, its systemd and docker exec included, so
# healing would depend on the harness reaching `docker unpause`; with SIGSTOP the container
# stays manageable and a transient systemd timer inside it thaws the server on its own if the
# harness dies before its `finally`.
PG_UNIT = "postgresql@15-main"


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


def _freeze_pg(host: str, ctx: dict, hold: float) -> None:
    ctx["backstop"] = _backstop(host, hold + 120, "/bin/systemctl", "kill", "-s", "SIGCONT",
                                PG_UNIT)
    ctx["frozen"] = host
    dexec(host, "systemctl", "kill", "-s", "SIGSTOP", PG_UNIT, timeout=20)


def _thaw_pg(host: str, ctx: dict) -> None:
    # twice: a process forked while the first SIGSTOP went round the cgroup gets its CONT too
    for _ in range(2):
        dexec(host, "systemctl", "kill", "-s", "SIGCONT", PG_UNIT, timeout=20)
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
                 latency_target=True, min_hold=lambda wl: wl.write_timeout + 3, min_warmup=4.0)


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


RESET_APPLY_DELAY = ("ALTER SYSTEM RESET recovery_min_apply_delay", "SELECT pg_reload_conf()")
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
    with ALTER SYSTEM before the stop, so it holds from its start) exactly D + 1 s after its
    stop: what it had before the stop is applied at once, what was committed after it is
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
        ctx["backstop"] = _backstop(victim, delay + 240, "/usr/sbin/runuser", "-u", "postgres",
                                    "--", "/usr/bin/psql", "-XAtq", "-d", "postgres",
                                    "-c", RESET_APPLY_DELAY[0], "-c", RESET_APPLY_DELAY[1])
        _psql(victim, f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}s'")
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
        ctx["purge"] = f"exit {p.returncode}: {(p.stdout + p.stderr).strip()[-300:]}"
        return {"purge": ctx["purge"]}

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
                _psql(victim, *RESET_APPLY_DELAY)
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


FAULTS: dict[str, Callable[[], Fault]] = {
    f.__name__: f for f in (one_standby_stopped, both_standbys_stopped, standby_network_cut,
                            app_instance_killed, app_host_stopped, primary_frozen,
                            one_standby_frozen, standby_receiver_stopped,
                            standby_down_past_purge, primary_killed_failover)
}
# failover last: it changes which node is the primary
ORDER = ["one_standby_stopped", "both_standbys_stopped", "standby_network_cut",
         "app_instance_killed", "app_host_stopped", "primary_frozen", "one_standby_frozen",
         "standby_receiver_stopped", "standby_down_past_purge", "primary_killed_failover"]


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
    return {
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


COLUMNS = ["fault", "operations", "ok", "failed", "indeterminate", "quorum_writes_ok",
           "unavailability_seconds", "p99_baseline_ms", "p99_fault_ms", "p99_bound_ms",
           "longest_gap_seconds", "deadline_overshoot_seconds", "worker_timeouts", "verdict"]


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
