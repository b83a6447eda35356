"""Jepsen-style fault harness for the lab: concurrent clients through the balancer, a recorded
history, one fault at a time (injected, held, healed), then the checker's verdict.

Everything here is bounded: a client stops at its deadline or after ``max_ops``; every wait has a
timeout; traffic goes only to the lab's containers. Every fault heals in a ``finally``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
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

    def write_timeout(self) -> float:
        """KV_WRITE_TIMEOUT as deployed on app1 (the app's default otherwise)."""
        p = dexec("app1", "sh", "-c", "grep -h '^KV_WRITE_TIMEOUT=' /etc/kv/env || true",
                  timeout=20, check=False)
        raw = p.stdout.strip().partition("=")[2].strip().strip("'\"")
        try:
            return float(raw) if raw else 5.0
        except ValueError:
            return 5.0

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
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def keys(self) -> list[str]:
        return [f"{self.prefix}-k{i}" for i in range(self.wl.keys)]

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    def record(self, op: dict) -> dict:
        with self._lock:
            op["id"] = next(self._ids)
            self.history.append(op)
        return op

    # one request, classified
    def write(self, s: requests.Session, process: int, key: str, value: str, level: str) -> dict:
        op = {"process": process, "op": "write", "key": key, "value": value, "level": level}
        op["start"] = time.monotonic()
        try:
            r = s.put(f"{self.lab.base}/api/kv/{key}", params={"w": level},
                      json={"value": value}, timeout=(2, self.wl.write_timeout + 10))
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
        if r.status_code in (200, 201):
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
        params = {"r": level}
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

    def final_reads(self, timeout: float = 90) -> None:
        """One ok r=primary read per key, retried (bounded) until the service answers."""
        s = self.lab.session()
        deadline = time.monotonic() + timeout
        for key in self.keys():
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

    return Fault("one_standby_stopped", inject, heal)


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

    return Fault("both_standbys_stopped", inject, heal, probe=probe_workers_free)


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

    return Fault("standby_network_cut", inject, heal)


def app_instance_killed() -> Fault:
    def inject(lab: Lab, ctx: dict) -> None:
        dexec("app1", "systemctl", "kill", "-s", "KILL", "kv@8001")
        ctx["killed"] = True

    def heal(lab: Lab, ctx: dict) -> None:
        # systemd restarts it (Restart=); start it in case the unit does not
        dexec("app1", "systemctl", "start", "kv@8001", check=False)
        lab.wait_instances("app1")

    return Fault("app_instance_killed", inject, heal)


def app_host_stopped() -> Fault:
    def inject(lab: Lab, ctx: dict) -> None:
        ctx["stopped"] = True
        run(["docker", "stop", "-t", "5", "kvlab-app2"], timeout=60)

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("stopped"):
            run(["docker", "start", "kvlab-app2"], timeout=60)
        lab.wait_instances("app2", timeout=120)

    return Fault("app_host_stopped", inject, heal)


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


FAULTS: dict[str, Callable[[], Fault]] = {
    f.__name__: f for f in (one_standby_stopped, both_standbys_stopped, standby_network_cut,
                            app_instance_killed, app_host_stopped, primary_killed_failover)
}
# failover last: it changes which node is the primary
ORDER = ["one_standby_stopped", "both_standbys_stopped", "standby_network_cut",
         "app_instance_killed", "app_host_stopped", "primary_killed_failover"]


# ------------------------------------------------------------------ one fault, end to end


def unavailability(history: list[dict], since: float, until: float) -> float:
    """Longest period in [since, until] with no quorum write completing successfully."""
    ends = sorted(o["end"] for o in history if o["op"] == "write" and o["level"] == "quorum"
                  and o["outcome"] == "ok" and o.get("end") and since <= o["end"] <= until)
    points = [since, *ends, until]
    return round(max(b - a for a, b in itertools.pairwise(points)), 3)


def run_fault(lab: Lab, fault: Fault, seconds: float, wl: Workload | None = None) -> dict:
    """Clients run through: warm-up, the fault held ``seconds``, its heal, a recovery period.
    Then final reads, the checker, a JSON history and a report entry."""
    wl = wl or Workload(write_timeout=env_float("KV_WRITE_TIMEOUT", 5.0))
    prefix = f"chaos-{fault.name}-{uuid.uuid4().hex[:6]}"
    rec = Recorder(lab, prefix, wl)
    ctx: dict = {}
    warm = max(2.0, seconds * 0.25)
    recover = max(3.0, seconds * 0.5)
    stop = threading.Event()
    # generous: the clients stop when told (after heal + recovery), this only bounds them
    hard_deadline = time.monotonic() + warm + seconds + fault.heal_timeout + recover + 60
    threads = [threading.Thread(target=rec.client, args=(p, hard_deadline, stop), daemon=True)
               for p in range(wl.clients)]
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
    result = checker.check(rec.history, primary_stable=fault.primary_stable)
    ops = [o for o in rec.history if not o.get("final")]
    counts = {k: sum(1 for o in ops if o["outcome"] == k)
              for k in ("ok", "failed", "indeterminate")}
    m = rec.marks
    report = {
        "fault": fault.name,
        "seconds_held": seconds,
        "operations": len(ops),
        **counts,
        "quorum_writes_ok": sum(1 for o in ops if o["op"] == "write" and o["level"] == "quorum"
                                and o["outcome"] == "ok"),
        "unavailability_seconds": unavailability(ops, m.get("fault", m["start"]),
                                                 m.get("stopped", time.monotonic())),
        "phases": {k: round(v - m["start"], 2) for k, v in m.items()},
        "context": {k: v for k, v in ctx.items() if isinstance(v, (str, int, float, list))},
        "probe": probe,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "verdict": "error" if error is not None else "valid" if result.ok else "INVALID",
        "checker": result.summary(),
        "violations": result.violations[:20],
    }
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


def update_report(entry: dict) -> None:
    path = RESULTS / "report.json"
    data = {}
    if path.is_file():
        with contextlib.suppress(ValueError):
            data = json.loads(path.read_text())
    data[entry["fault"]] = {k: v for k, v in entry.items() if k != "violations"}
    path.write_text(json.dumps(data, indent=1, default=str))


def table(entries: list[dict]) -> str:
    cols = ["fault", "operations", "ok", "failed", "indeterminate", "quorum_writes_ok",
            "unavailability_seconds", "verdict"]
    rows = [cols] + [[str(e.get(c, "")) for c in cols] for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     for r in rows)
