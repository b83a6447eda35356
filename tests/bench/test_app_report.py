"""bench/app_report.py (the loopback benchmark's report) on hand-made wrk output: throughput and
CPU per request add up over the rounds, p50/p99 are the median of the rounds, every case gets its
ratios to both ceilings (the minimal Django project and the app's bare view), the targets follow
from the ratio to the minimal project, and an error in any round fails the "every case" line."""

import os

import pytest

from bench import app_report


def wrk_text(requests, seconds=3.0, p50="2.00ms", p99="10.00ms", non2xx=0, socket=None):
    text = f"""Running 3s test @ http://127.0.0.1:8000
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.50ms    1.00ms  30.00ms   90.00%
  Latency Distribution
     50%    {p50}
     75%    3.00ms
     90%    5.00ms
     99%    {p99}
  {requests} requests in {seconds:.2f}s, 1.00MB read
"""
    if socket:
        text += f"  Socket errors: {socket}\n"
    if non2xx:
        text += f"  Non-2xx or 3xx responses: {non2xx}\n"
    return text + f"Requests/sec: {requests / seconds:.2f}\n"


def run(requests, cpu, **kw):
    r = app_report.parse_wrk(wrk_text(requests, **kw))
    r["cpu_s"] = cpu
    return r


def test_parse_wrk_units_and_errors():
    r = app_report.parse_wrk(wrk_text(3000, 3.0, p50="850.00us", p99="1.20s", non2xx=4,
                                      socket="connect 0, read 2, write 0, timeout 1"))
    assert r["requests"] == 3000
    assert r["seconds"] == pytest.approx(3.0)
    assert r["p50_ms"] == pytest.approx(0.85)
    assert r["p99_ms"] == pytest.approx(1200.0)
    assert r["non_2xx"] == 4
    assert r["socket_errors"] == "connect 0, read 2, write 0, timeout 1"


def test_parse_wrk_refuses_output_without_latency_distribution():
    with pytest.raises(ValueError):
        app_report.parse_wrk("  300 requests in 3.00s, 1.00MB read\n")


def test_ratios_to_both_ceilings_and_targets():
    rounds = {
        "minimal": [run(6000, 3.0, p50="2.00ms"), run(3000, 1.5, p50="4.00ms")],  # 1500/s 0.5 ms
        "bare": [run(3000, 1.8), run(3000, 1.8)],                                   # 1000/s 0.6 ms
        "get_one": [run(2400, 2.4, p50="3.00ms"), run(2100, 2.1, p50="5.00ms")],    # 750/s 1 ms
        "get_quorum": [run(1200, 1.2), run(1500, 1.5)],                             # 450/s
        "put_quorum": [run(1000, 2.0), run(1100, 2.2)],                             # 350/s
    }
    rep = app_report.summarize(rounds)
    res = rep["results"]
    assert res["minimal"]["rps"] == pytest.approx(1500)
    assert res["minimal"]["p50_ms"] == pytest.approx(3.0)  # median of the rounds
    assert res["minimal"]["cpu_ms_per_request"] == pytest.approx(0.5)
    assert res["get_one"]["cpu_ms_per_request"] == pytest.approx(1.0)
    assert res["get_one"]["to_minimal"] == {"rps": 0.5, "p50": pytest.approx(4 / 3, abs=1e-3),
                                           "p99": 1.0, "cpu": 2.0}
    assert res["get_one"]["to_bare"]["rps"] == 0.75
    assert res["get_one"]["to_bare"]["cpu"] == pytest.approx(1.667, abs=1e-3)
    assert res["bare"]["to_minimal"]["rps"] == pytest.approx(0.667, abs=1e-3)
    targets = {t["case"]: t for t in rep["targets"]}
    assert targets["get_one"]["ratio_to_minimal"] == 0.5 and not targets["get_one"]["met"]
    assert targets["get_quorum"]["ratio_to_minimal"] == 0.3 and not targets["get_quorum"]["met"]
    assert targets["put_quorum"]["met"] is False
    assert targets["every case"]["met"]
    assert rep["all_targets_met"] is False


def test_targets_met_and_an_error_in_one_round_fails_every_case():
    rounds = {
        "minimal": [run(1000, 1.0)],
        "get_one": [run(700, 1.0)],
        "get_quorum": [run(600, 1.0)],
        "put_quorum": [run(340, 1.0, seconds=2.9), run(10, 0.1, seconds=0.1, non2xx=1)],
    }
    rep = app_report.summarize(rounds)
    targets = {t["case"]: t for t in rep["targets"]}
    assert targets["get_one"]["met"] and targets["get_quorum"]["met"]
    assert targets["put_quorum"]["ratio_to_minimal"] == 0.35 and targets["put_quorum"]["met"]
    assert targets["every case"]["offending"] == ["put_quorum"]
    assert rep["all_targets_met"] is False
    assert rep["results"]["get_one"]["to_bare"] is None  # no bare case in this run


def test_missing_ceiling_misses_the_targets():
    rep = app_report.summarize({"get_one": [run(700, 1.0)]})
    assert all(not t["met"] for t in rep["targets"] if "min_ratio_to_minimal" in t)


def test_load_reads_wrk_and_cpu_files(tmp_path):
    (tmp_path / "minimal.1.wrk").write_text(wrk_text(1000, 1.0))
    (tmp_path / "minimal.1.cpu").write_text("0.5\n")
    (tmp_path / "get_one.1.wrk").write_text(wrk_text(500, 1.0))
    (tmp_path / "get_one.2.wrk").write_text(wrk_text(500, 1.0))
    rounds = app_report.load(str(tmp_path))
    assert [len(rounds[k]) for k in ("minimal", "get_one")] == [1, 2]
    assert rounds["minimal"][0]["cpu_s"] == 0.5
    assert "cpu_s" not in rounds["get_one"][0]


def test_cpu_seconds_counts_this_process():
    busy = sum(i * i for i in range(300000))
    assert busy > 0
    assert app_report.cpu_seconds(os.getpid()) > 0
