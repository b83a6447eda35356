"""Turn the benchmark's raw wrk results into the report: JSON with throughput, p50, p99 and error
counts per case, ratios to the ceiling and to one direct instance, the targets, and a PNG plot.

    python bench/report.py RAW.json OUT.json OUT.png

RAW.json (written by playbooks/benchmark.yml): {"meta": {...}, "cases": [{"name", "target"
(lb|direct), "view" (kv|bare), "op" (get|put), "level", "instances", "wrk": {BENCH_JSON},
"warmup": {BENCH_JSON of the unmeasured warm-up}}, ...]}
"""

from __future__ import annotations

import json
import sys

# (case at the full instance count through the balancer, minimum ratio to the ceiling)
TARGETS = [
    ("lb get r=one", 0.80),
    ("lb get r=quorum", 0.60),
    ("lb put w=quorum", 0.40),
]


def case_id(c: dict) -> str:
    if c["view"] == "bare":
        return f"{c['target']} bare get"
    lvl = ("r=" if c["op"] == "get" else "w=") + c["level"]
    return f"{c['target']} {c['op']} {lvl}"


def _errors(w: dict) -> tuple[int, dict]:
    errors = w.get("errors") or {}
    return sum(errors.get(k, 0) for k in ("connect", "read", "write", "timeout")), errors


def summarize(raw: dict) -> dict:
    """One row per measured wrk run. A case measured twice in a phase (the ceiling, before and
    after the cases compared with it) is compared through the mean of its runs."""
    cases = []
    for c in raw["cases"]:
        w = c["wrk"]
        seconds = w["duration_us"] / 1e6 or 1.0
        socket_errors, errors = _errors(w)
        warm = c.get("warmup") or {}
        warm_socket_errors, _ = _errors(warm)
        cases.append({
            "case": case_id(c), "target": c["target"], "view": c["view"], "op": c["op"],
            "level": c.get("level"), "instances_per_host": c["instances"],
            "requests": w["requests"], "seconds": round(seconds, 2),
            "rps": round(w["requests"] / seconds, 1),
            "p50_ms": round(w["latency_us"]["p50"] / 1000, 2),
            "p99_ms": round(w["latency_us"]["p99"] / 1000, 2),
            "non2xx": w["non2xx"], "non2xx_by_status": w.get("non2xx_by_status", {}),
            "socket_errors": socket_errors, "socket_errors_by_kind": errors,
            "warmup_requests": warm.get("requests", 0),
            "warmup_non2xx": warm.get("non2xx", 0),
            "warmup_socket_errors": warm_socket_errors,
        })
    runs: dict[tuple[str, int], list[float]] = {}
    for c in cases:
        runs.setdefault((c["case"], c["instances_per_host"]), []).append(c["rps"])
    mean = {k: sum(v) / len(v) for k, v in runs.items()}
    full = max((c["instances_per_host"] for c in cases), default=0)
    for c in cases:
        n = c["instances_per_host"]
        ceiling = mean.get(("lb bare get" if c["target"] == "lb" else "direct bare get", n))
        direct = mean.get((c["case"].replace("lb ", "direct ", 1), full))
        c["ratio_to_ceiling"] = round(c["rps"] / ceiling, 3) if ceiling else None
        c["ratio_to_one_direct_instance"] = round(c["rps"] / direct, 3) if direct else None
    ceilings = {f"{name} x{n}": {"runs_rps": runs[(name, n)], "mean_rps": round(mean[(name, n)], 1)}
                for (name, n) in runs if "bare" in name}
    targets = []
    for name, minimum in TARGETS:
        ceiling = mean.get(("lb bare get", full))
        rps = mean.get((name, full))
        ratio = round(rps / ceiling, 3) if rps is not None and ceiling else None
        targets.append({"case": name, "instances_per_host": full, "min_ratio_to_ceiling": minimum,
                        "ratio_to_ceiling": ratio,
                        "met": ratio is not None and ratio >= minimum})
    dirty = [c["case"] + f" x{c['instances_per_host']}" for c in cases
             if c["non2xx"] or c["socket_errors"] or c["warmup_non2xx"]
             or c["warmup_socket_errors"]]
    targets.append({"case": "every case", "requirement": "zero non-2xx and socket errors "
                    "(warm-up included)", "offending": dirty, "met": not dirty})
    return {"meta": raw.get("meta", {}), "cases": cases, "ceilings": ceilings,
            "targets": targets, "all_targets_met": all(t["met"] for t in targets)}


def table(report: dict) -> str:
    cols = ["case", "instances_per_host", "rps", "p50_ms", "p99_ms", "non2xx", "socket_errors",
            "warmup_non2xx", "ratio_to_ceiling", "ratio_to_one_direct_instance"]
    rows = [["case", "inst/host", "req/s", "p50 ms", "p99 ms", "non2xx", "sock err",
             "warm-up non2xx", "/ceiling", "/direct"]]
    rows += [[str(c[k]) for k in cols] for c in report["cases"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    for name, c in report.get("ceilings", {}).items():
        lines.append(f"ceiling {name}: runs {c['runs_rps']} req/s, mean {c['mean_rps']}")
    for t in report["targets"]:
        if "min_ratio_to_ceiling" in t:
            lines.append(f"target {t['case']} >= {t['min_ratio_to_ceiling']:.0%} of the ceiling: "
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
    colors = ["tab:gray" if c["view"] == "bare" else "tab:blue" if c["target"] == "lb"
              else "tab:orange" for c in main]
    seen: dict[str, int] = {}
    labels = []
    for c in main:
        seen[c["case"]] = seen.get(c["case"], 0) + 1
        labels.append(c["case"] + (f" (run {seen[c['case']]})" if seen[c["case"]] > 1 else ""))
    ax1.barh(labels, [c["rps"] for c in main], color=colors)
    for i, c in enumerate(main):
        label = f" {c['rps']:.0f}/s p99 {c['p99_ms']:.0f} ms"
        if c["non2xx"] or c["socket_errors"]:
            label += f" ERR {c['non2xx'] + c['socket_errors']}"
        ax1.text(c["rps"], i, label, va="center", fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("requests per second")
    ax1.set_title(f"{full} instances per app host (gray: bare Django view = ceiling)")
    names = sorted({c["case"] for c in scaling})
    for name in names:
        by_n: dict[int, list[float]] = {}
        for c in scaling:
            if c["case"] == name:
                by_n.setdefault(c["instances_per_host"], []).append(c["rps"])
        pts = sorted((n, sum(v) / len(v)) for n, v in by_n.items())
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
                 f"-d{wrk.get('duration')}s (after {wrk.get('warmup', 0)}s warm-up)", fontsize=10)
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
