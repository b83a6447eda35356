"""Turn the benchmark's raw wrk results into the report: JSON with throughput, p50, p99 and error
counts per case, ratios to the ceiling and to one direct instance, the targets, and a PNG plot.

    python bench/report.py RAW.json OUT.json OUT.png

RAW.json (written by playbooks/benchmark.yml): {"meta": {...}, "cases": [{"name", "target"
(lb|direct), "view" (kv|bare), "op" (get|put), "level", "instances", "wrk": {BENCH_JSON}}, ...]}
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


def summarize(raw: dict) -> dict:
    cases = []
    for c in raw["cases"]:
        w = c["wrk"]
        seconds = w["duration_us"] / 1e6 or 1.0
        errors = w["errors"]
        socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
        cases.append({
            "case": case_id(c), "target": c["target"], "view": c["view"], "op": c["op"],
            "level": c.get("level"), "instances_per_host": c["instances"],
            "requests": w["requests"], "seconds": round(seconds, 2),
            "rps": round(w["requests"] / seconds, 1),
            "p50_ms": round(w["latency_us"]["p50"] / 1000, 2),
            "p99_ms": round(w["latency_us"]["p99"] / 1000, 2),
            "non2xx": w["non2xx"], "non2xx_by_status": w.get("non2xx_by_status", {}),
            "socket_errors": socket_errors, "socket_errors_by_kind": errors,
        })
    by = {(c["case"], c["instances_per_host"]): c for c in cases}
    for c in cases:
        n = c["instances_per_host"]
        ceiling = by.get(("lb bare get", n)) if c["target"] == "lb" else by.get(
            ("direct bare get", n))
        direct = by.get((c["case"].replace("lb ", "direct ", 1), max(
            x["instances_per_host"] for x in cases)))
        c["ratio_to_ceiling"] = round(c["rps"] / ceiling["rps"], 3) if ceiling and ceiling[
            "rps"] else None
        c["ratio_to_one_direct_instance"] = round(c["rps"] / direct["rps"], 3) if direct and \
            direct["rps"] else None
    full = max((c["instances_per_host"] for c in cases), default=0)
    targets = []
    for name, minimum in TARGETS:
        c = by.get((name, full))
        ratio = c["ratio_to_ceiling"] if c else None
        targets.append({"case": name, "instances_per_host": full, "min_ratio_to_ceiling": minimum,
                        "ratio_to_ceiling": ratio,
                        "met": ratio is not None and ratio >= minimum})
    clean = [c["case"] + f" x{c['instances_per_host']}" for c in cases
             if c["non2xx"] or c["socket_errors"]]
    targets.append({"case": "every case", "requirement": "zero non-2xx and socket errors",
                    "offending": clean, "met": not clean})
    return {"meta": raw.get("meta", {}), "cases": cases, "targets": targets,
            "all_targets_met": all(t["met"] for t in targets)}


def table(report: dict) -> str:
    cols = ["case", "instances_per_host", "rps", "p50_ms", "p99_ms", "non2xx", "socket_errors",
            "ratio_to_ceiling", "ratio_to_one_direct_instance"]
    rows = [["case", "inst/host", "req/s", "p50 ms", "p99 ms", "non2xx", "sock err",
             "/ceiling", "/direct"]]
    rows += [[str(c[k]) for k in cols] for c in report["cases"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
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
    ax1.barh([c["case"] for c in main], [c["rps"] for c in main], color=colors)
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
                 f"-d{wrk.get('duration')}s", fontsize=10)
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
