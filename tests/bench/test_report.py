"""bench/report.py on hand-made raw results: a case's figure is the median of its rounds, the
ratios and the targets follow from it, and any non-2xx or socket error (any round, warm-up
included) fails the "every case" requirement."""

import pytest

from bench import cpu_sampler, report


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
            case("lb", "minimal", "get", "", 3, 1100, rnd),
            case("lb", "minimal", "put", "", 3, 600, rnd),
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


def by_name(summary, kind="min_ratio_to_ceiling"):
    return {t["case"]: t for t in summary["targets"] if kind in t or "requirement" in t}


def test_one_row_per_case_with_the_median_of_its_rounds():
    s = report.summarize(raw())
    assert len(s["cases"]) == 10
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
    r["cases"][11]["wrk"] = wrk(8500, non2xx=1, statuses={"502": 1})  # round 1, lb get r=one
    r["cases"][22]["wrk"] = wrk(12000, timeouts=3)  # round 2, direct bare get
    s = report.summarize(r)
    t = by_name(s)["every case"]
    assert not t["met"]
    assert t["offending"] == ["lb get r=one x3", "direct bare get x3"]
    assert run_of(s, "lb get r=one", 3)["non2xx_by_status"] == {"502": 1}
    assert run_of(s, "direct bare get", 3)["socket_errors"] == 3


def test_table_says_which_targets_are_missed():
    text = report.table(report.summarize(raw(quorum_rps=(590, 600, 580))))
    assert "lb get r=quorum >= 60% of the bare view: 0.59 -> NOT met" in text
    assert "lb get r=one >= 80% of the bare view: 0.85 -> met" in text
    assert "lb get r=quorum >= 60% of the minimal project: 0.536 -> NOT met" in text
    assert "lb put w=quorum >= 35% of the minimal project: 0.455 -> met" in text
    assert "900 1100 1000" in text


def test_ratios_and_targets_against_the_minimal_project():
    s = report.summarize(raw())
    assert run_of(s, "lb minimal get", 3)["ratio_to_minimal"] == pytest.approx(1.0)
    assert run_of(s, "lb get r=one", 3)["ratio_to_minimal"] == pytest.approx(850 / 1100, abs=1e-3)
    assert run_of(s, "lb minimal put", 3)["ratio_to_minimal"] == pytest.approx(600 / 1100, abs=1e-3)
    t = by_name(s, "min_ratio_to_minimal")
    assert t["lb get r=one"]["met"] and t["lb get r=quorum"]["met"] and t["lb put w=quorum"]["met"]
    assert t["lb put w=quorum"]["ratio_to_minimal"] == pytest.approx(500 / 1100, abs=1e-3)
    low = by_name(report.summarize(raw(quorum_rps=(590, 600, 580))), "min_ratio_to_minimal")
    assert not low["lb get r=quorum"]["met"]


def test_cpu_per_request_from_the_samples_over_each_run():
    r = raw()
    # two app hosts sampled every second from t=100: kv CPU grows 0.5 s/s on app1 and 0.25 s/s
    # on app2, the minimal project's 0.1 s/s on each
    r["cpu_samples"] = {
        h: "\n".join(f"{100 + i} {i * rate:.2f} {i * 0.1:.2f}" for i in range(60))
        for h, rate in (("app1", 0.5), ("app2", 0.25))}
    r["meta"]["direct_host"] = "app1"
    for c in r["cases"]:
        c["time"] = {"start": 110.5, "end": 120.5}  # 10 s, between samples
    s = report.summarize(r)
    one = run_of(s, "lb get r=one", 3)  # (0.5 + 0.25) x 10 s per round, 3 rounds
    assert one["cpu_ms_per_request"] == pytest.approx(3 * 7.5 * 1000 / one["requests"], rel=1e-3)
    direct = run_of(s, "direct get r=one", 3)  # app1 only
    assert direct["cpu_ms_per_request"] == pytest.approx(3 * 5.0 * 1000 / direct["requests"],
                                                         rel=1e-3)
    minimal = run_of(s, "lb minimal get", 3)  # the minimal project's column, both hosts
    assert minimal["cpu_ms_per_request"] == pytest.approx(3 * 2.0 * 1000 / minimal["requests"],
                                                          rel=1e-3)
    assert one["cpu_ratio_to_minimal"] == pytest.approx(
        one["cpu_ms_per_request"] / minimal["cpu_ms_per_request"], rel=1e-2)
    # a run outside the samples: no figure rather than a wrong one
    r["cases"][0]["time"] = {"start": 500.0, "end": 510.0}
    assert run_of(report.summarize(r), "lb minimal get", 3)["cpu_ms_per_request"] is None


def test_cpu_sampler_line_format(tmp_path):
    sampler = cpu_sampler
    out = tmp_path / "cpu.txt"
    assert sampler.main(["cpu_sampler.py", str(out), "0.05", "0.12"]) == 0
    rows = report.parse_samples(out.read_text())
    assert len(rows) >= 2 and all(len(r) == 3 for r in rows)
    assert rows[0][0] <= rows[-1][0]
    (tmp_path / "cpu.txt.stop").touch()  # the stop file ends it at once
    assert sampler.main(["cpu_sampler.py", str(out), "0.05", "30"]) == 0
    assert len(report.parse_samples(out.read_text())) == len(rows)
