"""The Grafana half of prometheus_grafana runs in its own Molecule scenario (molecule/grafana),
which needs Grafana's apt repository. Where that repository is unreachable (this project's CI
among them) this test is SKIPPED with the reason, never passed, and no container is created just
to find that out. Set KV_GRAFANA_MOLECULE=0 to leave it out on purpose (also a visible skip).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.molecule_gate import run_scenario

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = REPO / "roles" / "prometheus_grafana" / "defaults" / "main.yml"


def _probe(timeout: float = 10.0) -> tuple[bool, str]:
    url = yaml.safe_load(DEFAULTS.read_text())["prometheus_grafana_grafana_apt_key_url"]
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True, f"reachable: {url}"
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} is unreachable ({getattr(exc, 'reason', exc)})"


def test_grafana_molecule_scenario():
    if os.environ.get("KV_GRAFANA_MOLECULE") == "0":
        pytest.skip("grafana Molecule scenario NOT RUN: KV_GRAFANA_MOLECULE=0")
    reachable, why = _probe()
    if not reachable:
        pytest.skip(
            f"grafana Molecule scenario NOT RUN: Grafana's apt repository cannot be reached from "
            f"this machine ({why}); Grafana comes only from there. Its dashboards and "
            "provisioning were checked without it (tests/monitoring/test_dashboards.py)."
        )
    run_scenario("grafana")
