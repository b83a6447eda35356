"""The fault catalogue, part one: faults that keep the primary (stopped, cut, frozen
standbys, app instances and hosts, a frozen primary held below Patroni's ttl, the purge
horizon).
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import requests

from .config import PURGE_COMMAND, PURGE_HORIZON, READ_LEVELS
from .lab import Lab, dexec, run
from .workload import Recorder, Workload

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


