"""bench/report.py on hand-made raw results: the ceiling is the mean of its runs, the ratios and
the targets follow from it, and any non-2xx or socket error (warm-up included) fails the
"every case" requirement."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def wrk(requests, seconds=10.0, non2xx=0, timeouts=0, statuses=None):
    return {
        "requests": requests, "duration_us": int(seconds * 1e6), "bytes": requests * 100,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": non2xx, "timeout": timeouts},
        "non2xx": non2xx, "non2xx_by_status": statuses or {},
        "latency_us": {"p50": 2000, "p90": 5000, "p99": 9000, "max": 20000, "mean": 2500.0},
    }  # fmt: skip


def case(target, view, op, level, n, rps, warm=None, **kw):
    return {"target": target, "view": view, "op": op, "level": level, "instances": n,
            "wrk": wrk(rps * 10, **kw), "warmup": warm if warm is not None else wrk(rps * 2, 2.0)}


def raw(*, quorum_rps=700, warm_errors=0, second_ceiling=1100):
    return {"meta": {"date": "test"}, "cases": [
        case("lb", "bare", "get", "", 3, 900),
        case("lb", "kv", "get", "one", 3, 850),
        case("lb", "kv", "get", "quorum", 3, quorum_rps),
        case("lb", "kv", "put", "quorum", 3, 500,
             warm=wrk(100, 2.0, non2xx=warm_errors, statuses={"502": warm_errors})),
        case("lb", "bare", "get", "", 3, second_ceiling),
        case("direct", "bare", "get", "", 3, 1200),
        case("direct", "kv", "get", "one", 3, 1000),
        case("lb", "bare", "get", "", 1, 800),
        case("lb", "kv", "get", "one", 1, 800),
        case("lb", "bare", "get", "", 1, 800),
    ]}  # fmt: skip


def run_of(summary, name, n):
    return next(c for c in summary["cases"] if c["case"] == name and c["instances_per_host"] == n)


def by_name(summary):
    return {t["case"]: t for t in summary["targets"]}


def test_ratios_use_the_mean_of_the_ceiling_runs():
    s = report.summarize(raw())
    assert s["ceilings"]["lb bare get x3"] == {"runs_rps": [900.0, 1100.0], "mean_rps": 1000.0}
    one = run_of(s, "lb get r=one", 3)
    assert one["ratio_to_ceiling"] == pytest.approx(0.85)
    assert one["ratio_to_one_direct_instance"] == pytest.approx(0.85)
    one_x1 = run_of(s, "lb get r=one", 1)
    assert one_x1["ratio_to_ceiling"] == pytest.approx(1.0)


def test_targets_met_on_a_clean_fast_run():
    s = report.summarize(raw())
    t = by_name(s)
    assert t["lb get r=one"]["met"] and t["lb get r=one"]["ratio_to_ceiling"] == pytest.approx(0.85)
    assert t["lb get r=quorum"]["met"] and t["lb put w=quorum"]["met"]
    assert t["every case"]["met"] and s["all_targets_met"]


def test_a_ratio_below_its_target_is_not_met():
    s = report.summarize(raw(quorum_rps=590))
    t = by_name(s)
    assert t["lb get r=quorum"]["ratio_to_ceiling"] == pytest.approx(0.59)
    assert not t["lb get r=quorum"]["met"]
    assert not s["all_targets_met"]


def test_a_slower_second_ceiling_run_changes_the_ratio():
    # a ceiling that drifted down during the phase lowers the bar it sets, through the mean
    s = report.summarize(raw(second_ceiling=700))
    assert by_name(s)["lb get r=one"]["ratio_to_ceiling"] == pytest.approx(850 / 800, abs=0.001)


def test_errors_during_the_warm_up_count():
    s = report.summarize(raw(warm_errors=2))
    t = by_name(s)["every case"]
    assert not t["met"] and t["offending"] == ["lb put w=quorum x3"]
    assert not s["all_targets_met"]


def test_non2xx_and_socket_errors_of_a_measured_run_count():
    r = raw()
    r["cases"][1]["wrk"] = wrk(8500, non2xx=1, statuses={"502": 1})
    r["cases"][5]["wrk"] = wrk(12000, timeouts=3)
    t = by_name(report.summarize(r))["every case"]
    assert not t["met"]
    assert t["offending"] == ["lb get r=one x3", "direct bare get x3"]


def test_table_says_which_targets_are_missed():
    text = report.table(report.summarize(raw(quorum_rps=590)))
    assert "lb get r=quorum >= 60% of the ceiling: 0.59 -> NOT met" in text
    assert "lb get r=one >= 80% of the ceiling: 0.85 -> met" in text
    assert "ceiling lb bare get x3: runs [900.0, 1100.0] req/s, mean 1000.0" in text
