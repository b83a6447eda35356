"""The alert rules of prometheus_grafana: valid, unit-tested with promtool, and every alert has
at least one unit test where it fires and one where it does not (a new rule without tests fails).
The rule templates (templates/*.rules.yml.j2) are rendered with the role's defaults first, into
a copy of the role's layout where the unit tests find them as ../rules/<name>."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .rule_templates import rule_texts

ROLE = Path(__file__).resolve().parents[2] / "roles" / "prometheus_grafana"
RULE_TESTS = ROLE / "files" / "tests"
RULE_TEXTS = rule_texts()


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is missing: install Debian's `prometheus` package (it ships promtool)"
        )
    return path


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """files/rules (templates rendered) and files/tests, copied side by side."""
    root = tmp_path_factory.mktemp("rules")
    (root / "rules").mkdir()
    for name, text in RULE_TEXTS.items():
        (root / "rules" / name).write_text(text)
    shutil.copytree(RULE_TESTS, root / "tests")
    return root


def rule_test_files():
    files = sorted(RULE_TESTS.glob("*.test.yml"))
    assert files, f"no rule tests in {RULE_TESTS}"
    return files


def alert_names():
    names = []
    for text in RULE_TEXTS.values():
        for group in yaml.safe_load(text)["groups"]:
            names += [r["alert"] for r in group["rules"] if "alert" in r]
    return names


def test_rules_pass_promtool_check(layout):
    run = subprocess.run(
        [promtool(), "check", "rules", *map(str, sorted((layout / "rules").iterdir()))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_rule_unit_tests_pass(layout):
    run = subprocess.run(
        [promtool(), "test", "rules", *(f.name for f in rule_test_files())],
        cwd=layout / "tests",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_unit_tests_load_the_role_rule_files():
    for f in rule_test_files():
        loaded = set(yaml.safe_load(f.read_text())["rule_files"])
        assert loaded == {f"../rules/{name}" for name in RULE_TEXTS}, f"{f.name} loads {loaded}"


def test_alert_names_are_unique():
    names = alert_names()
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("alert", alert_names())
def test_every_alert_has_a_firing_and_a_quiet_test(alert):
    firing, quiet = [], []
    for f in rule_test_files():
        for case in yaml.safe_load(f.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["alertname"] != alert:
                    continue
                where = f"{f.name}: {case.get('name', '?')} @ {check['eval_time']}"
                (firing if check.get("exp_alerts") else quiet).append(where)
    assert firing, f"{alert} has no unit test where it fires (exp_alerts non-empty) in {RULE_TESTS}"
    assert quiet, f"{alert} has no unit test where it stays quiet (exp_alerts: []) in {RULE_TESTS}"


def test_every_tested_alert_exists():
    names = set(alert_names())
    for f in rule_test_files():
        for case in yaml.safe_load(f.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                assert check["alertname"] in names, f"{f.name}: unknown alert {check['alertname']}"


def test_rule_templates_take_their_thresholds_from_the_role_variables():
    texts = rule_texts(
        prometheus_grafana_backup_full_max_age_hours=24,
        prometheus_grafana_certificate_alert_days=7,
        groups={"all": ["db1", "vault1"], "postgres": ["db1"], "backup": ["vault1"]},
    )
    backup, certs = texts["kv-backup.rules.yml"], texts["kv-certificates.rules.yml"]
    assert "> 86400\n" in backup and 'host=~"vault1"' in backup
    assert "< 604800\n" in certs and 'kv_certificate_files{host=~"db1|vault1"}' in certs
    without_backup = rule_texts(groups={"all": ["db1"], "postgres": ["db1"]})
    names = [g["name"] for g in yaml.safe_load(without_backup["kv-backup.rules.yml"])["groups"]]
    assert names == ["kv-wal-archiving"], "backup alerts rendered without a backup host"
