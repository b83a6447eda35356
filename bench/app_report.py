"""The loopback benchmark's report (app/bench.sh): wrk output and worker CPU time per case and
round in, throughput, p50, p99, CPU per request and their ratios to the two ceilings out.

    python bench/app_report.py cpu PID [PID...]      # CPU seconds of each PID and its children
    python bench/app_report.py report WORK OUT.json KEY=VALUE...

WORK holds ``<case>.<round>.wrk`` (wrk --latency output) and ``<case>.<round>.cpu`` (CPU seconds
the serving gunicorn, master and workers, spent during that round) and, optionally,
``<case>.<round>.pgcpu`` (CPU seconds of the PostgreSQL servers, every process, in that round).
Ceilings: ``minimal``, a minimal Django project (bench/minimal) on the same gunicorn and
database, and ``bare``, a bare view inside the app (the app's whole stack around the same
lookup); ``min_put``, the minimal project's quorum write, is the most a write can get.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from statistics import median

CASES = {
    "minimal": "minimal Django project (PK lookup)",
    "min_put": "minimal Django project (quorum write)",
    "bare": "app's bare view (PK lookup)",
    "get_one": "GET r=one",
    "get_quorum": "GET r=quorum",
    "get_primary": "GET r=primary",
    "put_quorum": "PUT w=quorum",
    "put_one": "PUT w=one",
}
# (case, minimum ratio of its throughput to the minimal project's)
TARGETS = [("get_one", 0.70), ("get_quorum", 0.60), ("put_quorum", 0.35)]
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of its direct children (gunicorn's master and workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:  # the process ended in between
            continue
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is the state (stat's 3rd field): ppid is the 4th, utime/stime 14th/15th
        if int(stat.split("/")[2]) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def parse_wrk(text: str) -> dict:
    pct = {p: float(v) * _UNIT[u] for p, v, u in
           re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", text)
    if m is None or "50" not in pct or "99" not in pct:
        raise ValueError("not the output of wrk --latency")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: (.*)", text)
    return {"requests": int(m.group(1)), "seconds": float(m.group(2)) * _UNIT[m.group(3)] / 1000,
            "p50_ms": pct["50"], "p99_ms": pct["99"], "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errs.group(1).strip() if errs else None}


def summarize(rounds: dict[str, list[dict]]) -> dict:
    """``rounds``: case -> one dict per round (parse_wrk's, plus ``cpu_s``). Throughput is the
    total over the rounds, p50/p99 the median of the rounds, CPU per request the total CPU time
    over the total requests."""
    res = {}
    for name, runs in rounds.items():
        requests = sum(r["requests"] for r in runs)
        cpu = sum(r.get("cpu_s", 0.0) for r in runs)
        pg_cpu = [r["pg_cpu_s"] for r in runs if "pg_cpu_s" in r]
        res[name] = {
            "rps": requests / (sum(r["seconds"] for r in runs) or 1.0),
            "p50_ms": median(r["p50_ms"] for r in runs),
            "p99_ms": median(r["p99_ms"] for r in runs),
            "cpu_ms_per_request": round(cpu * 1000 / requests, 3) if requests else None,
            "pg_cpu_ms_per_request": round(sum(pg_cpu) * 1000 / requests, 3)
            if requests and len(pg_cpu) == len(runs) else None,
            "requests": requests,
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "socket_errors": [r["socket_errors"] for r in runs if r["socket_errors"]],
            "rounds": runs,
        }
    for r in res.values():
        for ceiling in ("minimal", "bare"):
            base = res.get(ceiling)
            r[f"to_{ceiling}"] = None if not base or not base["rps"] else {
                "rps": round(r["rps"] / base["rps"], 3),
                "p50": round(r["p50_ms"] / base["p50_ms"], 3) if base["p50_ms"] else None,
                "p99": round(r["p99_ms"] / base["p99_ms"], 3) if base["p99_ms"] else None,
                "cpu": round(r["cpu_ms_per_request"] / base["cpu_ms_per_request"], 3)
                if r["cpu_ms_per_request"] and base["cpu_ms_per_request"] else None,
            }
    # A write against the minimal project's write (the same statements, nothing else): how far
    # the app is from the most a write gets on this design.
    base = res.get("min_put")
    for name, r in res.items():
        if name.startswith("put_") and base and base["rps"]:
            r["to_min_put"] = {
                "rps": round(r["rps"] / base["rps"], 3),
                "cpu": round(r["cpu_ms_per_request"] / base["cpu_ms_per_request"], 3)
                if r["cpu_ms_per_request"] and base["cpu_ms_per_request"] else None,
            }
    targets = []
    for name, minimum in TARGETS:
        ratio = (res.get(name) or {}).get("to_minimal") or {}
        targets.append({"case": name, "min_ratio_to_minimal": minimum,
                        "ratio_to_minimal": ratio.get("rps"),
                        "met": ratio.get("rps") is not None and ratio["rps"] >= minimum})
    dirty = [n for n, r in res.items() if r["non_2xx"] or r["socket_errors"]]
    targets.append({"case": "every case", "requirement": "zero non-2xx and socket errors",
                    "offending": dirty, "met": not dirty})
    return {"results": res, "targets": targets, "all_targets_met": all(t["met"] for t in targets)}


def load(work: str) -> dict[str, list[dict]]:
    rounds: dict[str, list[dict]] = {}
    for name in CASES:
        for path in sorted(glob.glob(os.path.join(work, f"{name}.*.wrk"))):
            with open(path) as f:
                run = parse_wrk(f.read())
            cpu_path = path[:-len(".wrk")] + ".cpu"
            if os.path.exists(cpu_path):
                with open(cpu_path) as f:
                    run["cpu_s"] = float(f.read())
            pg_path = path[:-len(".wrk")] + ".pgcpu"
            if os.path.exists(pg_path):
                with open(pg_path) as f:
                    run["pg_cpu_s"] = float(f.read())
            rounds.setdefault(name, []).append(run)
    return rounds


def table(report: dict, header: str = "") -> str:
    def ratio(r, ceiling, k):
        v = (r.get(f"to_{ceiling}") or {}).get(k)
        return "-" if v is None else f"{v:.2f}"

    lines = [header] if header else []
    lines.append(f"{'case':34} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10} "
                 f"{'PG ms/req':>9} | "
                 f"{'to minimal: req/s p50 p99 CPU':>30} | {'to bare: req/s p50 p99 CPU':>27} "
                 "non-2xx")
    for name, label in CASES.items():
        r = report["results"].get(name)
        if r is None:
            continue
        cpu = "-" if r["cpu_ms_per_request"] is None else f"{r['cpu_ms_per_request']:.3f}"
        pg = r.get("pg_cpu_ms_per_request")
        pg = "-" if pg is None else f"{pg:.3f}"
        lines.append(
            f"{label:34} {r['rps']:7.0f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {cpu:>10} "
            f"{pg:>9} | "
            + f"{'':7}" + " ".join(f"{ratio(r, 'minimal', k):>5}" for k in ("rps", "p50", "p99",
                                                                              "cpu"))
            + " | " + f"{'':4}" + " ".join(f"{ratio(r, 'bare', k):>5}" for k in ("rps", "p50",
                                                                                  "p99", "cpu"))
            + f" {r['non_2xx']}")
    lines.append("")
    base = report["results"].get("min_put")
    if base and base.get("to_minimal"):
        lines.append(f"the minimal project's quorum write: {base['to_minimal']['rps']:.2f} of "
                     "its GET's req/s (the most a quorum write gets on this design)")
        for name, r in report["results"].items():
            if r.get("to_min_put"):
                lines.append(f"{CASES.get(name, name)}: {r['to_min_put']['rps']:.2f} of the "
                             f"minimal project's quorum write (req/s), CPU "
                             f"{r['to_min_put']['cpu'] or 0:.2f}x")
        lines.append("")
    for t in report["targets"]:
        if "min_ratio_to_minimal" in t:
            got = "-" if t["ratio_to_minimal"] is None else f"{t['ratio_to_minimal']:.2f}"
            lines.append(f"target {CASES[t['case']]:14} >= {t['min_ratio_to_minimal']:.2f} of "
                         f"the minimal project's req/s: {got} {'met' if t['met'] else 'MISSED'}")
        else:
            lines.append(f"target {t['requirement']}: {'met' if t['met'] else 'MISSED'} "
                         f"{t['offending'] or ''}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "cpu":
        print(" ".join(f"{cpu_seconds(int(p)):.2f}" for p in argv[2:]))
        return 0
    if len(argv) >= 4 and argv[1] == "report":
        work, out = argv[2], argv[3]
        params = dict(a.split("=", 1) for a in argv[4:])
        report = {"params": params, **summarize(load(work))}
        header = (f"KV benchmark: wrk -t{params.get('wrk_threads')} -c{params.get('connections')},"
                  f" {params.get('duration_s')}s per case in {params.get('rounds')} interleaved "
                  f"rounds (p50/p99: median of rounds); app: gunicorn {params.get('app_workers')}"
                  f" {params.get('app_worker_class')} workers x {params.get('app_threads')} "
                  f"threads; minimal: {params.get('minimal_workers')} sync workers; primary + 2 "
                  f"standbys (ANY 1), loopback; CPU: gunicorn master + workers; load average "
                  f"{params.get('loadavg_before')} before, {params.get('loadavg_after')} after")
        print(table(report, header))
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nJSON: {out}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
