"""One fault, end to end: workload, fault, heal, checker, and the figures taken from the
history.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import math
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

import requests

from .. import checker
from .config import (
    DEADLINE_MARGIN,
    INDEPENDENT_RATE,
    INDEPENDENT_READERS,
    LATENCY_FLOOR,
    RESULTS,
    env_float,
)
from .faults import Fault
from .history import rto_figures, split_brain_writes
from .lab import Lab, dexec
from .report import flat_figures, update_report
from .workload import Recorder, Workload

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


