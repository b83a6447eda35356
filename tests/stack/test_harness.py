"""The harness's pure parts, offline: the unavailability window and the fault order."""

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
