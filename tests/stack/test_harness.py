"""The harness's pure parts, offline: the unavailability window, the fault order, the latency,
deadline and worker-timeout figures of the report."""

from datetime import UTC, datetime

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


def test_faults_that_change_the_primary_run_last_and_every_fault_is_known():
    assert set(harness.ORDER) == set(harness.FAULTS) and len(harness.ORDER) == len(
        harness.FAULTS)
    stable = [harness.FAULTS[n]().primary_stable for n in harness.ORDER]
    first_change = stable.index(False)
    assert not any(stable[first_change:]), "a primary-stable fault after a failover"
    assert {n for n, s in zip(harness.ORDER, stable, strict=True) if not s} == {
        "switchover_under_load", "primary_killed", "two_failovers", "primary_network_cut",
        "primary_host_frozen", "primary_host_killed"}
    # no fault runs a playbook but the planned switchover
    assert "primary_killed_failover" not in harness.FAULTS


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


def test_freezes_and_lag_faults_carry_their_targets():
    new = ["primary_frozen", "one_standby_frozen", "standby_receiver_stopped",
           "standby_down_past_purge"]
    faults = {n: harness.FAULTS[n]() for n in new}
    assert all(f.targets and f.independent_reads for f in faults.values())
    assert {n for n, f in faults.items() if f.latency_target} == {"primary_frozen",
                                                                   "one_standby_frozen"}
    wl = harness.Workload(write_timeout=5.0)
    assert faults["primary_frozen"].min_hold(wl) > wl.write_timeout
    assert faults["standby_down_past_purge"].min_hold(wl) > harness.PURGE_HORIZON
    assert faults["standby_receiver_stopped"].one_max_lag == 1.0
    # the frozen primary stays below Patroni's ttl (no election); the host freeze goes past it
    assert faults["primary_frozen"].hold_below_ttl > 0
    assert harness.FAULTS["primary_host_frozen"]().hold_past_ttl >= 10
    assert harness.FAULTS["etcd_quorum_lost"]().hold_past_ttl > 0


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


# ------------------------------------------------------------------ failover figures

TL = 1 << 40  # version = timeline << 40 | counter


def _wv(start, end, tl, n, level="quorum", outcome="ok", key="k", **kw):
    return {"op": "write", "level": level, "outcome": outcome, "start": start, "end": end,
            "version": tl * TL + n, "key": key, **kw}


def test_timeline_of_a_version():
    assert harness.timeline_of(3 * TL + 17) == 3 and harness.timeline_of(TL - 1) == 0


def test_rto_is_the_first_quorum_write_of_a_later_timeline():
    history = [
        _wv(0.0, 0.1, 2, 1),
        _wv(10.5, 10.6, 2, 2),  # after the kill, still the old timeline (an old ack in flight)
        _wv(12.0, 13.5, 3, 5, level="one"),  # w=one does not count
        _wv(12.0, 14.0, 3, 3, outcome="indeterminate"),  # nor a write with no answer
        _wv(13.0, 16.25, 3, 4),
        _wv(14.0, 15.0, 3, 6),  # the first one acknowledged
        {"op": "read", "level": "quorum", "outcome": "ok", "start": 11, "end": 11.1,
         "version": 3 * TL},
    ]
    assert harness.rto_seconds(history, at=10.0, timeline=2) == 5.0
    assert harness.rto_seconds(history, at=10.0, timeline=3) is None
    assert harness.rto_seconds(history, at=15.5, timeline=2) == 0.75


def test_median_of_odd_and_even_counts():
    assert harness.median([]) is None
    assert harness.median([7.0]) == 7.0
    assert harness.median([9.0, 1.0, 5.0]) == 5.0
    assert harness.median([4.0, 1.0, 3.0, 10.0]) == 3.5


def test_rto_figures_per_kill_with_median_and_missing():
    history = [_wv(0, 1, 1, 1), _wv(4, 6, 2, 1), _wv(20, 22, 3, 1), _wv(30, 31, 3, 2)]
    kills = [{"at": 2.0, "timeline": 1, "victim": "pg1"},
             {"at": 12.0, "timeline": 2, "victim": "pg2"},
             {"at": 25.0, "timeline": 3, "victim": "pg3"}]  # no new primary after it
    fig = harness.rto_figures(history, kills)
    assert fig["rtos"] == [4.0, 10.0, None] and fig["missing"] == 1
    assert fig["median"] == 7.0 and fig["max"] == 10.0
    assert harness.rto_figures(history, []) == {"rtos": [], "missing": 0, "median": None,
                                                 "max": None}


def test_split_brain_writes_are_old_timeline_acks_after_a_new_one():
    history = [
        _wv(0.0, 1.0, 2, 1),
        _wv(5.0, 6.0, 3, 1, key="a"),  # the new primary's first ack, at 6.0
        _wv(5.5, 6.5, 2, 2, key="b", level="one"),  # concurrent with it: not provably stale
        _wv(6.2, 6.3, 2, 3, key="c", level="one"),  # began after it: a stale primary's ack
        _wv(7.0, 7.5, 3, 2, key="d"),
        _wv(7.0, None, 2, 4, key="e", outcome="indeterminate"),  # no ack: not counted
        _wv(8.0, 9.0, 2, 5, key="f", outcome="failed"),
    ]
    found = harness.split_brain_writes(history)
    assert [o["key"] for o in found] == ["c"]
    assert harness.split_brain_writes(history[:3]) == []
    assert harness.split_brain_writes([]) == []


def _final(key, version):
    return {"op": "read", "level": "primary", "final": True, "outcome": "ok", "key": key,
            "version": version}


def test_missing_acknowledged_writes_against_the_final_reads():
    history = [
        _wv(1, 2, 3, 10, key="t0", level="one", process=995),
        _wv(1, 2, 3, 11, key="t1", level="one", process=995),
        _wv(1, 2, 3, 12, key="t2", level="one", process=995),
        _wv(1, 2, 2, 13, key="t3", level="one", process=995, outcome="failed"),
        _wv(1, 2, 3, 14, key="x", level="one", process=1),  # not selected
        _final("t0", 3 * TL + 10), _final("t1", 3 * TL + 20), _final("t2", 3 * TL + 5),
        {**_final("t3", None), "found": False, "version": None},
    ]
    lost = harness.missing_acknowledged(history, lambda o: o.get("process") == 995)
    assert [o["key"] for o in lost] == ["t2"]
    no_final = [_wv(1, 2, 3, 10, key="t9", process=995)]
    assert len(harness.missing_acknowledged(no_final, lambda o: True)) == 1


def test_undocumented_write_failures_leave_the_documented_503s_out():
    history = [
        _wv(0, 1, 1, 1),
        {**_wv(0, 1, 1, 2, outcome="failed"), "status": 503, "error": "quorum_unavailable"},
        {**_wv(0, None, 1, 3, outcome="indeterminate"), "status": 503,
         "error": "quorum_unavailable committed_locally=None"},
        {**_wv(0, 1, 1, 4, outcome="failed"), "status": 503, "error": "database_unavailable"},
        {**_wv(0, None, 1, 5, outcome="indeterminate"), "status": 502,
         "error": "upstream_unavailable"},
        {**_wv(0, None, 1, 6, outcome="indeterminate"), "error": "ReadTimeout"},
        {**_wv(0, None, 1, 7, outcome="indeterminate"), "status": 503,
         "error": "service_unavailable"},  # nginx's own 503, not the app's
        {**_wv(0, None, 1, 8, outcome="indeterminate", level="one"), "status": 502},
    ]
    bad = harness.undocumented_write_failures(history)
    assert [o["version"] & (TL - 1) for o in bad] == [5, 6, 7]
    assert [o["version"] & (TL - 1) for o in harness.undocumented_write_failures(
        history, level="one")] == [8]


def test_two_primaries_in_a_sample():
    samples = [{"t": 1, "nodes": {"pg1": "primary", "pg2": "standby", "pg3": "standby"}},
               {"t": 2, "nodes": {"pg1": "primary", "pg2": "down", "pg3": "unknown: x"}},
               {"t": 3, "nodes": {"pg1": "primary", "pg2": "primary", "pg3": "standby"}}]
    assert [s["t"] for s in harness.two_primaries(samples)] == [3]


def test_pg_state_from_psql():
    assert harness.pg_state(0, "f\n", "") == "primary"
    assert harness.pg_state(0, "t\n", "") == "standby"
    # psql's 2: no connection (not running, starting up, shutting down)
    assert harness.pg_state(2, "", "psql: error: connection to server ... failed") == "down"
    assert harness.pg_state(1, "", "psql: error: relation").startswith("unknown: exit 1")
    assert harness.pg_state(126, "", "OCI runtime exec failed").startswith("unknown: exit 126")
    assert harness.pg_state(0, "", "").startswith("unknown")


def test_shutdown_after_reads_the_first_shutdown_request_since_the_cut():
    log = "\n".join([
        "2026-12-02 02:20:00.100 UTC [90] LOG:  received fast shutdown request",  # before the cut
        "2026-12-02 02:21:05.000 UTC [97] LOG:  checkpoint starting: time",
        "2026-12-02 02:21:14.250 UTC [97] LOG:  received fast shutdown request",
        "2026-12-02 02:21:20.000 UTC [99] LOG:  received immediate shutdown request",
    ])
    cut = datetime(2026, 12, 2, 2, 21, 0, tzinfo=UTC).timestamp()
    assert harness.shutdown_after(log, cut) == 14.25
    immediate = "2026-12-02 02:21:29.320 UTC [97] LOG:  received immediate shutdown request"
    assert harness.shutdown_after(immediate, cut) == 29.32
    assert harness.shutdown_after("2026-12-02 02:21:14.250 UTC [97] LOG:  checkpoint", cut) is None
    assert harness.shutdown_after("", cut) is None


def test_rto_column_shows_the_median_and_every_kill():
    one = harness.flat_figures({"rto": {"rtos": [4.2], "median": 4.2}})
    assert one["rto_seconds"] == 4.2
    many = harness.flat_figures({"rto": {"rtos": [4.0, None, 6.0], "median": 5.0}})
    assert many["rto_seconds"] == "5.0 (4.0/-/6.0)"
    assert harness.flat_figures({})["rto_seconds"] is None


def _fake_patroni(tmp_path, body):
    """A stand-in systemctl on PATH (only what the scripts ask of it) and a config file."""
    import os
    import stat
    import sys

    bindir = tmp_path / "bin"
    bindir.mkdir()
    patroni = bindir / "patroni"
    patroni.write_text(f"#!{sys.executable}\n")
    log = tmp_path / "systemctl.log"
    systemctl = bindir / "systemctl"
    systemctl.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        f'[ "$1" = show ] && echo "{{ path={patroni} ; argv[]={patroni} /etc/x.yml ; }}"\n'
        "exit 0\n")
    systemctl.chmod(systemctl.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "patroni.yml"
    config.write_text(body)
    config.chmod(0o640)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    return config, log, env


def test_apply_delay_goes_into_patroni_s_config_and_back_byte_for_byte(tmp_path):
    import subprocess

    import yaml

    body = ("# managed\nscope: kv\npostgresql:\n  parameters:\n    max_connections: 100\n"
            "  data_dir: /var/lib/postgresql/15/main\n")
    config, log, env = _fake_patroni(tmp_path, body)
    subprocess.run(["sh", "-c", harness.SET_APPLY_DELAY, "kvchaos", "80s", str(config)],
                   env=env, check=True, timeout=30)
    changed = yaml.safe_load(config.read_text())
    assert changed["postgresql"]["parameters"] == {"max_connections": 100,
                                                   "recovery_min_apply_delay": "80s"}
    assert changed["scope"] == "kv" and (config.stat().st_mode & 0o777) == 0o640
    # a second run keeps the first copy (the original), not the changed file
    subprocess.run(["sh", "-c", harness.SET_APPLY_DELAY, "kvchaos", "90s", str(config)],
                   env=env, check=True, timeout=30)
    subprocess.run(["sh", "-c", harness.reset_apply_delay(str(config))], env=env, check=True,
                   timeout=30)
    assert config.read_text() == body and (config.stat().st_mode & 0o777) == 0o640
    assert not (tmp_path / "patroni.yml.kvchaos").exists()
    assert "kill -s HUP --kill-whom=main patroni" in log.read_text()
    assert "$" not in harness.reset_apply_delay()
    # nothing to put back: nothing done
    subprocess.run(["sh", "-c", harness.reset_apply_delay(str(config))], env=env, check=True,
                   timeout=30)
    assert config.read_text() == body


def test_unpause_backstop_runs_in_its_own_session_and_is_ended_by_the_heal():
    import os

    # ended long before its sleep is over: the docker command never runs
    proc = harness._unpause_backstop("kvlab-no-such-container", 60)
    try:
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        assert proc.poll() is None
    finally:
        harness._end_backstop(proc)
    assert proc.returncode == -15
    harness._end_backstop(proc)  # already ended: nothing to do
    harness._end_backstop(None)
