"""Turn the benchmark's raw wrk results into the report: JSON with throughput, p50, p99 and error
counts per case, CPU per request, ratios to the minimal Django project, to the app's bare view
(``ratio_to_ceiling``) and to one direct instance, the targets, and a PNG plot.

    python bench/report.py RAW.json OUT.json OUT.png

RAW.json (written by bench/benchmark.yml): {"meta": {..., "direct_host"}, "cases": [{"name",
"target" (lb|direct), "view" (kv|bare|minimal), "op" (get|put), "level", "instances", "wrk":
{BENCH_JSON}, "warmup": {BENCH_JSON of the unmeasured warm-up, first round only}, "round": N,
"time": {"start", "end"} (unix time of the measured run)}, ...], "cpu_samples": {app host:
bench/cpu_sampler.py's lines "<unix time> <kv CPU s> <minimal CPU s>"}}

Ceilings: ``minimal`` (the minimal Django project, bench/minimal, served the same way: the
targets are set against its GET) and ``bare`` (a bare view inside the app: the app's own stack).
CPU per request: the serving gunicorns' CPU time over the case's runs (the samples interpolated at
each run's start and end; every app host through the balancer, the direct host for a direct
case) divided by the requests served.
"""

from __future__ import annotations

import json
import sys
from itertools import pairwise
from statistics import median

# (case at the full instance count through the balancer, minimum ratio to the app's bare view)
TARGETS = [
    ("lb get r=one", 0.80),
    ("lb get r=quorum", 0.60),
    ("lb put w=quorum", 0.40),
]
# (case, minimum ratio of its throughput to the minimal project's GET, same target)
TARGETS_MINIMAL = [
    ("lb get r=one", 0.70),
    ("lb get r=quorum", 0.60),
    ("lb put w=quorum", 0.35),
]


def case_id(c: dict) -> str:
    if c["view"] == "bare":
        return f"{c['target']} bare get"
    if c["view"] == "minimal":
        return f"{c['target']} minimal {c['op']}"
    lvl = ("r=" if c["op"] == "get" else "w=") + c["level"]
    return f"{c['target']} {c['op']} {lvl}"


def _errors(w: dict) -> tuple[int, dict]:
    errors = w.get("errors") or {}
    return sum(errors.get(k, 0) for k in ("connect", "read", "write", "timeout")), errors


def parse_samples(text: str) -> list[tuple[float, float, float]]:
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append(tuple(float(p) for p in parts))
    return sorted(rows)


def _at(rows: list[tuple], t: float, col: int) -> float | None:
    """The column's value at time ``t``, linear between the two samples around it."""
    for a, b in pairwise(rows):
        if a[0] <= t <= b[0]:
            if b[0] == a[0]:
                return a[col]
            return a[col] + (b[col] - a[col]) * (t - a[0]) / (b[0] - a[0])
    return None


def run_cpu_seconds(c: dict, samples: dict[str, list], direct_host: str | None) -> float | None:
    """CPU seconds the serving gunicorns spent during the run ``c`` (None: not sampled)."""
    span = c.get("time") or {}
    if "start" not in span or not samples:
        return None
    col = 2 if c["view"] == "minimal" else 1
    hosts = list(samples) if c["target"] == "lb" else [direct_host]
    total = 0.0
    for host in hosts:
        rows = samples.get(host)
        if not rows:
            return None
        start, end = _at(rows, span["start"], col), _at(rows, span["end"], col)
        if start is None or end is None:
            return None
        total += end - start
    return total


def summarize(raw: dict) -> dict:
    """One row per case and instance count. A case runs once per round (rounds interleave the
    cases, so the machine's drift hits all of them alike): throughput and latencies are the
    median over its rounds, errors the sum over its rounds and its warm-up."""
    samples = {h: parse_samples(t) for h, t in (raw.get("cpu_samples") or {}).items()}
    direct_host = raw.get("meta", {}).get("direct_host")
    groups: dict[tuple[str, int], list[dict]] = {}
    for c in raw["cases"]:
        groups.setdefault((case_id(c), c["instances"]), []).append(c)
    cases = []
    for (name, n), runs in groups.items():
        first = runs[0]
        rps = [round(r["wrk"]["requests"] / ((r["wrk"]["duration_us"] / 1e6) or 1.0), 1)
               for r in runs]
        measured = [_errors(r["wrk"]) for r in runs]
        warm = [r.get("warmup") or {} for r in runs]
        kinds: dict[str, int] = {}
        statuses: dict[str, int] = {}
        for r, (_, errors) in zip(runs, measured, strict=True):
            for k, v in errors.items():
                kinds[k] = kinds.get(k, 0) + v
            for k, v in (r["wrk"].get("non2xx_by_status") or {}).items():
                statuses[k] = statuses.get(k, 0) + v
        cpu = [run_cpu_seconds(r, samples, direct_host) for r in runs]
        requests = sum(r["wrk"]["requests"] for r in runs)
        cases.append({
            "cpu_ms_per_request": round(sum(cpu) * 1000 / requests, 3)
            if requests and None not in cpu else None,
            "case": name, "target": first["target"], "view": first["view"], "op": first["op"],
            "level": first.get("level"), "instances_per_host": n,
            "rounds": len(runs), "runs_rps": rps, "rps": round(median(rps), 1),
            "requests": sum(r["wrk"]["requests"] for r in runs),
            "p50_ms": round(median([r["wrk"]["latency_us"]["p50"] for r in runs]) / 1000, 2),
            "p99_ms": round(median([r["wrk"]["latency_us"]["p99"] for r in runs]) / 1000, 2),
            "non2xx": sum(r["wrk"]["non2xx"] for r in runs), "non2xx_by_status": statuses,
            "socket_errors": sum(e for e, _ in measured), "socket_errors_by_kind": kinds,
            "warmup_requests": sum(w.get("requests", 0) for w in warm),
            "warmup_non2xx": sum(w.get("non2xx", 0) for w in warm),
            "warmup_socket_errors": sum(_errors(w)[0] for w in warm),
        })
    by = {(c["case"], c["instances_per_host"]): c for c in cases}
    full = max((c["instances_per_host"] for c in cases), default=0)
    for c in cases:
        n = c["instances_per_host"]
        ceiling = by.get(("lb bare get" if c["target"] == "lb" else "direct bare get", n))
        direct = by.get((c["case"].replace("lb ", "direct ", 1), full))
        c["ratio_to_ceiling"] = round(c["rps"] / ceiling["rps"], 3) if ceiling and ceiling[
            "rps"] else None
        c["ratio_to_one_direct_instance"] = round(c["rps"] / direct["rps"], 3) if direct and \
            direct["rps"] else None
        minimal = by.get((f"{c['target']} minimal get", full))
        c["ratio_to_minimal"] = round(c["rps"] / minimal["rps"], 3) if minimal and minimal[
            "rps"] else None
        c["cpu_ratio_to_minimal"] = round(c["cpu_ms_per_request"] / minimal[
            "cpu_ms_per_request"], 3) if minimal and minimal["cpu_ms_per_request"] and c[
            "cpu_ms_per_request"] else None
    targets = []
    for name, minimum in TARGETS_MINIMAL:
        c = by.get((name, full))
        ratio = c["ratio_to_minimal"] if c else None
        targets.append({"case": name, "instances_per_host": full, "min_ratio_to_minimal": minimum,
                        "ratio_to_minimal": ratio,
                        "met": ratio is not None and ratio >= minimum})
    for name, minimum in TARGETS:
        c = by.get((name, full))
        ratio = c["ratio_to_ceiling"] if c else None
        targets.append({"case": name, "instances_per_host": full, "min_ratio_to_ceiling": minimum,
                        "ratio_to_ceiling": ratio,
                        "met": ratio is not None and ratio >= minimum})
    dirty = [c["case"] + f" x{c['instances_per_host']}" for c in cases
             if c["non2xx"] or c["socket_errors"] or c["warmup_non2xx"]
             or c["warmup_socket_errors"]]
    targets.append({"case": "every case", "requirement": "zero non-2xx and socket errors "
                    "(warm-up included)", "offending": dirty, "met": not dirty})
    return {"meta": raw.get("meta", {}), "cases": cases, "targets": targets,
            "all_targets_met": all(t["met"] for t in targets)}


def table(report: dict) -> str:
    cols = ["case", "instances_per_host", "rps", "runs_rps", "p50_ms", "p99_ms",
            "cpu_ms_per_request", "non2xx", "socket_errors", "warmup_non2xx", "ratio_to_minimal",
            "cpu_ratio_to_minimal", "ratio_to_ceiling", "ratio_to_one_direct_instance"]
    rows = [["case", "inst/host", "req/s", "rounds req/s", "p50 ms", "p99 ms", "CPU ms/req",
             "non2xx", "sock err", "warm-up non2xx", "/minimal", "CPU/minimal", "/bare",
             "/direct"]]
    rows += [[" ".join(f"{v:.0f}" for v in c[k]) if k == "runs_rps" else str(c[k])
              for k in cols] for c in report["cases"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    for t in report["targets"]:
        if "min_ratio_to_minimal" in t:
            lines.append(f"target {t['case']} >= {t['min_ratio_to_minimal']:.0%} of the minimal "
                         f"project: {t['ratio_to_minimal']} -> {'met' if t['met'] else 'NOT met'}")
        elif "min_ratio_to_ceiling" in t:
            lines.append(f"target {t['case']} >= {t['min_ratio_to_ceiling']:.0%} of the bare view: "
                         f"{t['ratio_to_ceiling']} -> {'met' if t['met'] else 'NOT met'}")
        else:
            lines.append(f"target {t['requirement']}: {'met' if t['met'] else 'NOT met'} "
                         f"{t['offending'] or ''}")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = report["cases"]
    full = max(c["instances_per_host"] for c in cases)
    main = [c for c in cases if c["instances_per_host"] == full]
    scaling = [c for c in cases if c["target"] == "lb"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6))
    colors = ["tab:green" if c["view"] == "minimal" else "tab:gray" if c["view"] == "bare"
              else "tab:blue" if c["target"] == "lb" else "tab:orange" for c in main]
    ax1.barh([c["case"] for c in main], [c["rps"] for c in main], color=colors,
             xerr=[[c["rps"] - min(c["runs_rps"]) for c in main],
                   [max(c["runs_rps"]) - c["rps"] for c in main]], capsize=3)
    for i, c in enumerate(main):
        label = f" {c['rps']:.0f}/s p99 {c['p99_ms']:.0f} ms"
        errors = (c["non2xx"] + c["socket_errors"] + c["warmup_non2xx"]
                  + c["warmup_socket_errors"])
        if errors:
            label += f" ERR {errors}"
        ax1.text(c["rps"], i, label, va="center", fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("requests per second")
    ax1.set_title(f"{full} instances per app host (green: minimal Django project = ceiling; "
                  "gray: the app's bare view)")
    names = sorted({c["case"] for c in scaling})
    for name in names:
        pts = sorted((c["instances_per_host"], c["rps"]) for c in scaling if c["case"] == name)
        if len(pts) > 1:
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax2.set_xlabel("instances per app host")
    ax2.set_ylabel("requests per second (through the balancer)")
    ax2.set_xticks(sorted({c["instances_per_host"] for c in scaling}))
    ax2.legend(fontsize=8)
    ax2.set_title("scaling with instances")
    meta = report.get("meta", {})
    wrk = meta.get("wrk", {})
    fig.suptitle(f"KV benchmark {meta.get('date', '')} {meta.get('machine', '')} "
                 f"wrk -t{wrk.get('threads')} -c{wrk.get('connections')} "
                 f"-d{wrk.get('duration')}s, median of {wrk.get('rounds', 1)} interleaved rounds "
                 f"(bars: min-max), {wrk.get('warmup', 0)}s warm-up", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str]) -> int:
    raw_path, out_json, out_png = argv[1:4]
    with open(raw_path) as f:
        raw = json.load(f)
    report = summarize(raw)
    with open(out_json, "w") as f:
        json.dump(report, f, indent=1)
    plot(report, out_png)
    print(table(report))
    print(f"report: {out_json}\nplot: {out_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
