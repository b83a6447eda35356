"""bench/report.py on hand-made raw results: a case's figure is the median of its rounds, the
ratios and the targets follow from it, and any non-2xx or socket error (any round, warm-up
included) fails the "every case" requirement."""

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


def case(target, view, op, level, n, rps, rnd=0, warm=None, **kw):
    return {"target": target, "view": view, "op": op, "level": level, "instances": n,
            "round": rnd, "wrk": wrk(rps * 10, **kw),
            "warmup": warm if warm is not None else (wrk(rps * 2, 2.0) if rnd == 0 else {})}


def raw(*, quorum_rps=(700, 690, 710), warm_errors=0, ceiling=(900, 1100, 1000)):
    cases = []
    for rnd in range(3):
        cases += [
            case("lb", "bare", "get", "", 3, ceiling[rnd], rnd),
            case("lb", "kv", "get", "one", 3, (850, 800, 900)[rnd], rnd),
            case("lb", "kv", "get", "quorum", 3, quorum_rps[rnd], rnd),
            case("lb", "kv", "put", "quorum", 3, 500, rnd,
                 warm=wrk(100, 2.0, non2xx=warm_errors, statuses={"502": warm_errors})
                 if rnd == 0 else {}),
            case("direct", "bare", "get", "", 3, 1200, rnd),
            case("direct", "kv", "get", "one", 3, 1000, rnd),
        ]
    for rnd in range(3):
        cases += [case("lb", "bare", "get", "", 1, 800, rnd),
                  case("lb", "kv", "get", "one", 1, 800, rnd)]
    return {"meta": {"date": "test"}, "cases": cases}


def run_of(summary, name, n):
    return next(c for c in summary["cases"] if c["case"] == name and c["instances_per_host"] == n)


def by_name(summary):
    return {t["case"]: t for t in summary["targets"]}


def test_one_row_per_case_with_the_median_of_its_rounds():
    s = report.summarize(raw())
    assert len(s["cases"]) == 8
    ceiling = run_of(s, "lb bare get", 3)
    assert ceiling["rounds"] == 3 and ceiling["runs_rps"] == [900.0, 1100.0, 1000.0]
    assert ceiling["rps"] == 1000.0
    assert ceiling["requests"] == 30000
    one = run_of(s, "lb get r=one", 3)
    assert one["rps"] == 850.0
    assert one["ratio_to_ceiling"] == pytest.approx(0.85)
    assert one["ratio_to_one_direct_instance"] == pytest.approx(0.85)
    assert run_of(s, "lb get r=one", 1)["ratio_to_ceiling"] == pytest.approx(1.0)


def test_one_outlier_round_does_not_move_the_median():
    s = report.summarize(raw(ceiling=(1000, 400, 1000)))
    assert run_of(s, "lb bare get", 3)["rps"] == 1000.0
    assert by_name(s)["lb get r=one"]["ratio_to_ceiling"] == pytest.approx(0.85)


def test_targets_met_on_a_clean_fast_run():
    s = report.summarize(raw())
    t = by_name(s)
    assert t["lb get r=one"]["met"] and t["lb get r=one"]["ratio_to_ceiling"] == pytest.approx(0.85)
    assert t["lb get r=quorum"]["met"] and t["lb put w=quorum"]["met"]
    assert t["every case"]["met"] and s["all_targets_met"]


def test_a_ratio_below_its_target_is_not_met():
    s = report.summarize(raw(quorum_rps=(590, 600, 580)))
    t = by_name(s)
    assert t["lb get r=quorum"]["ratio_to_ceiling"] == pytest.approx(0.59)
    assert not t["lb get r=quorum"]["met"]
    assert not s["all_targets_met"]


def test_errors_during_the_warm_up_count():
    s = report.summarize(raw(warm_errors=2))
    t = by_name(s)["every case"]
    assert not t["met"] and t["offending"] == ["lb put w=quorum x3"]
    assert run_of(s, "lb put w=quorum", 3)["warmup_non2xx"] == 2
    assert not s["all_targets_met"]


def test_errors_of_any_round_count():
    r = raw()
    r["cases"][7]["wrk"] = wrk(8500, non2xx=1, statuses={"502": 1})  # round 1, lb get r=one
    r["cases"][16]["wrk"] = wrk(12000, timeouts=3)  # round 2, direct bare get
    s = report.summarize(r)
    t = by_name(s)["every case"]
    assert not t["met"]
    assert t["offending"] == ["lb get r=one x3", "direct bare get x3"]
    assert run_of(s, "lb get r=one", 3)["non2xx_by_status"] == {"502": 1}
    assert run_of(s, "direct bare get", 3)["socket_errors"] == 3


def test_table_says_which_targets_are_missed():
    text = report.table(report.summarize(raw(quorum_rps=(590, 600, 580))))
    assert "lb get r=quorum >= 60% of the ceiling: 0.59 -> NOT met" in text
    assert "lb get r=one >= 80% of the ceiling: 0.85 -> met" in text
    assert "900 1100 1000" in text
