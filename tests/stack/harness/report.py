"""The per-fault report: flat figures, report.json, the summary tables.
"""

from __future__ import annotations

import contextlib
import json

from .config import RESULTS


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
