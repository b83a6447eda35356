"""The elk role's Molecule scenario (molecule/elk): converge, idempotence, testinfra, and an app log
line found in Elasticsearch by its request id.

It needs Elastic's apt repository, which is unreachable from some machines (this project's CI
among them). There the test is SKIPPED with the reason, never passed: the summary shows
"SKIPPED ... elk Molecule scenario NOT RUN". Run `pytest -rs tests/elk` to see the reason.
Set KV_ELK_MOLECULE=0 to leave it out on purpose (also a visible skip).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.molecule_gate import run_scenario

from .vendor_repo import probe, repo_url

MAX_MAP_COUNT = 262144


def test_elk_molecule_scenario():
    if os.environ.get("KV_ELK_MOLECULE") == "0":
        pytest.skip("elk Molecule scenario NOT RUN: KV_ELK_MOLECULE=0")
    reachable, why = probe(timeout=10)
    if not reachable:
        pytest.skip(
            f"elk Molecule scenario NOT RUN: Elastic's apt repository {repo_url()} cannot be "
            f"reached from this machine ({why}); Elasticsearch, Logstash, Kibana and Filebeat "
            "come only from there. The role's templates and pipeline were checked without them "
            "(tests/elk/test_templates.py, test_pipeline_fields.py)."
        )
    current = int(Path("/proc/sys/vm/max_map_count").read_text())
    if current < MAX_MAP_COUNT:
        pytest.skip(
            f"elk Molecule scenario NOT RUN: vm.max_map_count is {current} on this machine and "
            f"Elasticsearch needs {MAX_MAP_COUNT}; containers share it with the host. Run "
            f"`sudo sysctl -w vm.max_map_count={MAX_MAP_COUNT}` and try again."
        )
    run_scenario("elk")
