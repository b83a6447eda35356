"""Consistency under faults, each fault on its own, through the balancer (issue 8).

Bounded by default (``KV_CHAOS_SECONDS``, default 6 s of fault per case, about 4-6 minutes for
the whole module with the failover); ``make chaos`` sets a longer hold. Histories go to
``.cache/chaos/<fault>.json`` and the per-fault summary to ``.cache/chaos/report.json``.
The failover runs last: it changes which node is the primary, and heals by rejoining the old
primary as a standby.
"""

from __future__ import annotations

from collections import Counter

import pytest

from . import harness

pytestmark = [pytest.mark.lab, pytest.mark.chaos]

SECONDS = harness.env_float("KV_CHAOS_SECONDS", 6.0)
REPORTS: list[dict] = []


@pytest.fixture(scope="module")
def workload(lab) -> harness.Workload:
    return harness.Workload(write_timeout=lab.write_timeout(),
                            clients=int(harness.env_float("KV_CHAOS_CLIENTS", 6)),
                            rate=harness.env_float("KV_CHAOS_RATE", 150.0))


def _verdict(report: dict) -> str:
    lines = [f"{report['fault']}: {report['verdict']} ({report['checker']['violations_by_kind']})"]
    lines += [f"  {v['kind']} {v['key']}: {v['detail']}" for v in report["violations"][:5]]
    return "\n".join(lines)


@pytest.mark.parametrize("name", harness.ORDER)
def test_fault(lab, workload, name):
    report = harness.run_fault(lab, harness.FAULTS[name](), SECONDS, workload)
    REPORTS.append(report)
    assert report["verdict"] == "valid", _verdict(report)
    assert report["quorum_writes_ok"] > 0, "no quorum write succeeded in the whole run"
    assert "restore_error" not in report, report["restore_error"]
    if name == "both_standbys_stopped":
        probe = report["probe"]
        deadline = workload.write_timeout + 1.5
        assert probe["quorum_writes"], "the probe made no quorum write during the fault"
        slow = [(s, t) for s, t in probe["quorum_writes"] if t > deadline]
        assert not slow, f"quorum writes answered after the {deadline}s deadline: {slow}"
        statuses = Counter(s for s, _ in probe["quorum_writes"])
        assert set(statuses) == {503}, f"quorum writes must answer 503, got {dict(statuses)}"
        statuses = Counter(s for s, _ in probe["one_writes"])
        assert probe["one_writes"] and set(statuses) <= {200, 201}, (
            f"w=one writes must keep working with both standbys down, got {dict(statuses)}")
        assert not probe["healthz_failures"], (
            f"/healthz through the balancer failed: {dict(Counter(probe['healthz_failures']))}")
        assert probe["healthz_worst_seconds"] < 1.0, f"the workers look exhausted: {probe}"
    # the lab is healthy again for whatever runs next
    lab.wait_healthy(timeout=60, why=f"after {name}")
