"""The fault catalogue, part two: faults that change the primary (or may) under Patroni,
and the etcd faults.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from .config import READ_LEVELS, ROOT, env_float
from .faults import PATRONI_UNIT, PG_COMM, Fault, _cut_network, _hold, _restore_network, _signal_pg
from .history import (
    missing_acknowledged,
    timeline_of,
    two_primaries,
    undocumented_write_failures,
)
from .lab import Lab, dexec, playbook, run
from .runner import elapsed
from .workload import Recorder

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
# `primary_network_cut`: a docker exec probe takes up to about a second on a loaded machine, so
# the demotion is seen up to this long after it happened. Used only when the server's own log
# has no shutdown line to time it by.
PROBE_SLACK = 1.0
# The lab's PostgreSQL log (role postgres_replication: logging collector, log_line_prefix '%m ...').
PG_LOG = "/var/log/postgresql/postgresql-15-main.log"
# The postmaster's line when it begins to shut down: from then on it accepts no connection and
# ends its sessions (fast or immediate mode), so no write is accepted any more.
_SHUTDOWN_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[\d+\] "
                            r"LOG:  received (?:fast|immediate|smart) shutdown request")
# w=one writes right after a frozen primary thaws, each to a key of its own.
THAW_WRITES = 20




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


def shutdown_after(log_text: str, since: float) -> float | None:
    """Seconds from ``since`` (epoch) to the first shutdown request the server logged at or
    after it, or None. Containers share the controller's clock, so the two are comparable."""
    for line in log_text.splitlines():
        m = _SHUTDOWN_LINE.match(line)
        if m:
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            seconds = at.replace(tzinfo=UTC).timestamp() - since
            if seconds >= 0:
                return round(seconds, 2)
    return None


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
                                        "at": time.monotonic(), "at_epoch": time.time()})
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
    the other members for the failsafe), and the others elect a leader. Seen locally through
    docker exec: ``pg_is_in_recovery()``, or no PostgreSQL answering; timed by the server's own
    log (its shutdown request), or by the probe, with its lag, when the log has no such line.
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
        # the server's own time of it, free of the probe's lag
        log = dexec(victim, "tail", "-n", "5000", PG_LOG, timeout=30, check=False)
        ctx["shutdown_after"] = shutdown_after(log.stdout, ctx["kills"][0]["at_epoch"])
        _wait_new_primary(ctx["recorder"], ctx["kills"][0])
        return {"demoted_after": ctx.get("demoted_after"),
                "demoted_state": ctx.get("demoted_state"),
                "shutdown_after": ctx.get("shutdown_after")}

    def heal(lab: Lab, ctx: dict) -> None:
        if ctx.get("isolated"):
            _restore_network(ctx["isolated"], ctx)
            _heal_rejoin(lab, ctx)

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        out = _rejoined_check(ctx)
        after, logged = ctx.get("demoted_after"), ctx.get("shutdown_after")
        if logged is not None and (after is None or logged <= after):
            if logged > ctx["ttl"]:
                out.append(f"{ctx['isolated']}'s PostgreSQL logged its shutdown request {logged} s "
                           f"after the cut, past Patroni's ttl ({ctx['ttl']} s)")
        elif after is None:
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


def _heal_etcd(lab: Lab, ctx: dict) -> None:
    """Start etcd again on the hosts an etcd fault stopped it on; note the primary after."""
    ctx["held"] = (ctx.get("held", (0.0,))[0], time.monotonic())
    if ctx.get("stopped"):
        _etcd_all(ctx["stopped"], "start")
    c = lab.wait_healthy(why="after starting etcd again")
    ctx["after"] = {"primary": c["primary"], "timeline": c["timeline"]}


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

    def check(lab: Lab, ctx: dict, history: list[dict]) -> list[str]:
        return _same_primary_check(ctx, history)

    return Fault("etcd_member_down", inject, _heal_etcd, check=check, hold_past_ttl=0.0,
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

    return Fault("etcd_quorum_lost", inject, _heal_etcd, probe=probe, check=check,
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


