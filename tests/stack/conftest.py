"""Stack tests: the checker's unit tests need nothing; tests marked ``lab`` need the deployed lab.

A lab test FAILS when the lab does not answer (a stack test that did nothing is not green).
Only ``KV_STACK_OFFLINE=1`` deselects them on purpose (same as ``-m "not lab"``).
"""

from __future__ import annotations

import os

import pytest

from . import harness


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KV_STACK_OFFLINE", "") not in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="KV_STACK_OFFLINE=1 selects the offline subset")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lab() -> harness.Lab:
    lab = harness.Lab.from_repo()
    problem = lab.unreachable_reason()
    if problem:
        pytest.fail(f"the lab is not up ({problem}); run `make lab` first, or select the "
                    "offline subset with -m 'not lab' or KV_STACK_OFFLINE=1", pytrace=False)
    return lab


def pytest_terminal_summary(terminalreporter):
    from .test_faults import REPORTS

    if REPORTS:
        terminalreporter.write_sep("=", "consistency under faults")
        terminalreporter.write_line(harness.table(REPORTS))
        terminalreporter.write_line(f"histories and report.json in {harness.RESULTS}")
