"""The harness's pure parts, offline: the unavailability window, the fault order, the latency,
deadline and worker-timeout figures of the report."""

import pytest

from . import harness


def _w(end, level="quorum", outcome="ok"):
    return {"op": "write", "level": level, "outcome": outcome, "end": end}


def test_unavailability_is_the_longest_gap_without_a_quorum_write():
    history = [_w(1.0), _w(2.0), _w(2.5, level="one"), _w(3.0, outcome="failed"), _w(6.5),
               _w(7.0), {"op": "read", "level": "quorum", "outcome": "ok", "end": 5.0}]
    assert harness.unavailability(history, since=0.5, until=8.0) == 4.5


def test_unavailability_without_any_success_is_the_whole_window():
    assert harness.unavailability([_w(None, outcome="indeterminate")], 10.0, 25.0) == 15.0


def test_failover_runs_last_and_every_fault_is_known():
    assert harness.ORDER[-1] == "primary_killed_failover"
    assert set(harness.ORDER) == set(harness.FAULTS)
    assert all(harness.FAULTS[n]().primary_stable for n in harness.ORDER[:-1])


def test_table_lists_every_fault():
    out = harness.table([{"fault": "x", "operations": 3, "ok": 2, "failed": 1,
                          "indeterminate": 0, "quorum_writes_ok": 1,
                          "unavailability_seconds": 0.5, "verdict": "valid"}])
    assert "x" in out.splitlines()[1] and "valid" in out


def _r(start, elapsed, level="quorum", outcome="ok", final=False):
    return {"op": "read", "level": level, "outcome": outcome, "start": start,
            "end": start + elapsed, "elapsed": elapsed, "final": final}


def test_p99_is_the_nearest_rank():
    assert harness.p99([]) is None
    assert harness.p99([0.5]) == 0.5
    values = [i / 1000 for i in range(1, 201)]  # 200 values: the 198th smallest
    assert harness.p99(values) == 0.198
    assert harness.p99(list(reversed(values))) == 0.198


def test_latency_bound_is_twice_the_baseline_with_a_floor():
    assert harness.latency_bound(0.003, floor=0.1) == pytest.approx(0.103)
    assert harness.latency_bound(0.3, floor=0.1) == pytest.approx(0.6)


def test_independent_latency_compares_the_hold_with_the_warm_up():
    marks = {"start": 0.0, "fault": 5.0, "injected": 5.2, "heal": 12.0, "healed": 13.0}
    history = [_r(0.5, 9.0)]  # the first second (TLS handshakes) is not part of the baseline
    history += [_r(1 + i * 0.03, 0.02) for i in range(100)]  # baseline: 20 ms
    history += [_r(5.3 + i * 0.05, 0.03) for i in range(98)]  # held: 30 ms ...
    history += [_r(9.0, 0.9, outcome="failed")] * 2  # ... and two slow failures: the p99
    history += [_r(6.0, 5.0, level="primary"), _r(6.0, 5.0, final=True)]  # not selected
    lat = harness.independent_latency(history, ("quorum", "one"), marks, floor=0.1)
    assert lat["baseline_reads"] == 100 and lat["fault_reads"] == 100
    assert lat["baseline_p99"] == 0.02 and lat["fault_p99"] == 0.9
    assert lat["bound"] == 0.12 and lat["within_bound"] is False
    # the last ok read ended at 5.3 + 97 * 0.05 + 0.03; none until the heal at 12.0
    assert lat["longest_gap_seconds"] == pytest.approx(12.0 - 10.18)
    assert harness.independent_latency(history, (), marks) is None


def test_independent_latency_within_the_bound():
    marks = {"start": 0.0, "fault": 3.0, "injected": 3.1, "heal": 6.0}
    history = [_r(1.0 + i * 0.01, 0.05) for i in range(100)]
    history += [_r(3.2 + i * 0.02, 0.12) for i in range(100)]
    lat = harness.independent_latency(history, ("quorum",), marks, floor=0.1)
    assert lat["within_bound"] is True and lat["bound"] == pytest.approx(0.15)


def test_independent_latency_leaves_the_detection_out_of_the_p99_only():
    marks = {"start": 0.0, "fault": 3.0, "injected": 3.0, "heal": 9.0}
    history = [_r(1.0 + i * 0.01, 0.05) for i in range(100)]
    history += [_r(3.1 + i * 0.01, 0.5) for i in range(10)]  # hedged before anyone knew
    history += [_r(5.0 + i * 0.02, 0.06) for i in range(200)]
    lat = harness.independent_latency(history, ("quorum",), marks, floor=0.1, detect=2.0)
    assert lat["fault_reads"] == 200 and lat["fault_p99"] == 0.06 and lat["within_bound"]
    assert lat["fault_p99_with_detection"] == 0.5
    late = [*history, _r(6.0, 2.0), _r(6.1, 2.0), _r(6.2, 2.0)]  # a probe waited for, later
    assert not harness.independent_latency(late, ("quorum",), marks, detect=2.0)["within_bound"]


def test_deadline_overshoot_uses_each_operation_s_own_deadline():
    history = [
        {"op": "write", "level": "quorum", "start": 0.0, "end": None, "elapsed": 6.2,
         "outcome": "indeterminate", "id": 1, "key": "k"},
        {"op": "delete", "level": "quorum", "start": 0.0, "end": 4.0, "outcome": "ok",
         "id": 2, "key": "k"},
        {"op": "read", "level": "token", "start": 1.0, "end": 4.5, "outcome": "failed",
         "id": 3, "key": "k"},  # a client-side timeout: no elapsed, but an end
        {"op": "read", "level": "primary", "start": 1.0, "end": 20.0, "outcome": "ok",
         "final": True, "id": 4, "key": "k"},  # final reads are retried: left out
    ]
    over = harness.deadline_overshoot(history, write_timeout=5.0, read_timeout=2.0)
    assert over["seconds"] == 1.5 and over["op"]["id"] == 3 and over["op"]["elapsed"] == 3.5
    assert harness.deadline_overshoot(history[:2], 5.0, 2.0)["seconds"] == 1.2
    fast = [_r(0.0, 0.1)]
    assert harness.deadline_overshoot(fast, 5.0, 2.0)["seconds"] == -1.9
    assert harness.deadline_overshoot([], 5.0, 2.0) == {"seconds": None, "op": None}


def test_worker_timeouts_are_counted_inside_the_window():
    lines = [
        '{"@timestamp": "2026-12-01T13:00:05.123Z", "message": "WORKER TIMEOUT (pid:41)"}',
        '{"@timestamp": "2026-12-01T13:00:30.000Z", "message": "WORKER TIMEOUT (pid:42)"}',
        '{"@timestamp": "2026-12-01T12:59:00.000Z", "message": "WORKER TIMEOUT (pid:40)"}',
        '{"@timestamp": "2026-12-01T13:00:06.000Z", "message": "Booting worker with pid: 43"}',
        'not json WORKER TIMEOUT',
    ]
    t0 = 1796130000.0  # 2026-12-01T13:00:00Z
    assert harness.count_worker_timeouts(lines, t0, t0 + 10) == 1
    assert harness.count_worker_timeouts(lines, t0, t0 + 60) == 2
    assert harness.count_worker_timeouts(lines, t0 + 61, t0 + 99) == 0


def test_new_faults_run_before_the_failover_and_carry_their_targets():
    new = ["primary_frozen", "one_standby_frozen", "standby_receiver_stopped",
           "standby_down_past_purge"]
    assert all(harness.ORDER.index(n) < harness.ORDER.index("primary_killed_failover")
               for n in new)
    faults = {n: harness.FAULTS[n]() for n in new}
    assert all(f.targets and f.independent_reads for f in faults.values())
    assert {n for n, f in faults.items() if f.latency_target} == {"primary_frozen",
                                                                   "one_standby_frozen"}
    wl = harness.Workload(write_timeout=5.0)
    assert faults["primary_frozen"].min_hold(wl) > wl.write_timeout
    assert faults["standby_down_past_purge"].min_hold(wl) > harness.PURGE_HORIZON
    assert faults["standby_receiver_stopped"].one_max_lag == 1.0


def test_report_figures_and_markdown():
    report = {"fault": "x", "operations": 3, "ok": 2, "failed": 1, "indeterminate": 0,
              "verdict": "valid", "deadline_overshoot": {"seconds": 0.25},
              "independent_reads": {"baseline_p99": 0.0123, "fault_p99": 0.5, "bound": 0.1123,
                                    "longest_gap_seconds": 1.5},
              "worker_timeouts_by_host": {"app1": 1, "app2": 2}}
    report.update(harness.flat_figures(report))
    assert (report["p99_baseline_ms"], report["p99_fault_ms"], report["p99_bound_ms"]) == (
        12.3, 500.0, 112.3)
    assert report["worker_timeouts"] == 3 and report["longest_gap_seconds"] == 1.5
    md = harness.markdown([report]).splitlines()
    assert md[0].startswith("| fault |") and len(md) == 3
    assert md[2].split(" | ")[harness.COLUMNS.index("worker_timeouts")] == "3"
    assert "| - |" in harness.markdown([{"fault": "y"}])
