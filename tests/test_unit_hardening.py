"""The roles' systemd hardening drop-ins (roles/*/templates/<unit>.hardening.conf.j2), rendered by
Ansible's templating with each role's defaults and vars, then checked by systemd's own tools on
the controller: `systemd-analyze verify` reports nothing about the drop-in, and
`systemd-analyze security --offline=true` scores it within the target.

The base unit here is a bare one (ExecStart=/bin/true, the package unit's User=): it isolates
what the drop-in contributes. These figures are offline estimates; the scores of the units on
running hosts are measured by molecule/stack/tests/test_hardening.py on the lab, and
docs/security.md ("systemd hardening") lists both."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted(ROOT.glob("roles/*/templates/*.service.hardening.conf.j2"))
TARGET = 5.0
# User= of each package's unit (the drop-ins do not change it); absent: root.
PACKAGE_USERS = {
    "prometheus.service": "prometheus",
    "prometheus-alertmanager.service": "prometheus",
    "prometheus-node-exporter.service": "prometheus",
    "prometheus-nginx-exporter.service": "prometheus",
    "prometheus-postgres-exporter.service": "prometheus",
    "grafana-server.service": "grafana",
    "etcd.service": "etcd",
    "elasticsearch.service": "elasticsearch",
    "logstash.service": "logstash",
    "kibana.service": "kibana",
    "pgbackrest-server.service": "postgres",
    "pgbackrest-backup@.service": "pgbackrest",
}
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def unit_of(template: Path) -> str:
    return template.name.removesuffix(".hardening.conf.j2")


def instance_of(unit: str) -> str:
    """What systemd scores and verifies for a unit: an instance of a template unit."""
    return unit.replace("@.", "@check.")


def template_of(unit: str) -> str:
    """The template a documented row's instance (pgbackrest-backup@full.service) comes from."""
    return re.sub(r"@[^.]+\.", "@.", unit)


def render(template: Path) -> str:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    role = template.parents[1]
    variables = {"ansible_managed": "Ansible managed"}
    for part in ("defaults", "vars"):
        path = role / part / "main.yml"
        if path.is_file():
            variables.update(yaml.safe_load(path.read_text()) or {})
    text = Templar(loader=DataLoader(), variables=variables).template(
        trust_as_template(template.read_text())
    )
    assert "{{" not in text and "{%" not in text, text
    return text


def stage(tmp_path: Path, unit: str, dropin: str) -> Path:
    """A unit directory (searched before the system's) with a bare `unit` and the drop-in;
    returns the drop-in's path."""
    user = PACKAGE_USERS.get(unit)
    (tmp_path / unit).write_text(
        "[Unit]\nDescription=bare unit\n[Service]\nExecStart=/bin/true\n"
        + (f"User={user}\n" if user else "")
    )
    (tmp_path / f"{unit}.d").mkdir()
    path = tmp_path / f"{unit}.d" / "50-hardening.conf"
    path.write_text(dropin)
    return path


def analyze(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:", "SYSTEMD_PAGER": ""},
    )  # fmt: skip


def verify_complaints(tmp_path: Path, unit: str, dropin_path: Path) -> list[str]:
    """What `systemd-analyze verify` says about the drop-in (the roles' check, same rule)."""
    run = analyze(tmp_path, "verify", "--man=no", instance_of(unit))
    lines = [line for line in run.stderr.splitlines() if str(dropin_path) in line]
    return lines + ([f"rc={run.returncode}: {run.stderr}"] if run.returncode else [])


def test_every_hardened_unit_has_a_template():
    assert {unit_of(t) for t in TEMPLATES} >= {
        "nginx.service", "prometheus-nginx-exporter.service", "prometheus-node-exporter.service",
        "prometheus.service", "prometheus-alertmanager.service", "grafana-server.service",
        "etcd.service", "elasticsearch.service", "logstash.service", "kibana.service",
        "filebeat.service", "prometheus-postgres-exporter.service",
    }  # fmt: skip


@needs_analyze
@pytest.mark.parametrize("template", TEMPLATES, ids=unit_of)
def test_dropin_passes_systemd_analyze_verify(template, tmp_path):
    unit = unit_of(template)
    dropin = stage(tmp_path, unit, render(template))
    assert verify_complaints(tmp_path, unit, dropin) == []


@needs_analyze
@pytest.mark.parametrize("bad", ["ProtectSystem=maybe", "ReadWritePaths=relative", "Sandbox=yes"])
def test_the_verify_rule_catches_a_bad_dropin(bad, tmp_path):
    template = ROOT / "roles/nginx/templates/nginx.service.hardening.conf.j2"
    dropin = stage(tmp_path, "nginx.service", render(template) + bad + "\n")
    assert verify_complaints(tmp_path, "nginx.service", dropin) != []


def readme_table():
    """docs/security.md's "systemd hardening" table: unit -> (exposure, where measured)."""
    section = (ROOT / "docs" / "security.md").read_text().split("## systemd hardening", 1)[1]
    rows = {}
    for line in section.split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (float(cells[3]), cells[4])
    return rows


def test_readme_lists_every_hardened_unit():
    assert {unit_of(t) for t in TEMPLATES} <= {template_of(u) for u in readme_table()}


@needs_analyze
@pytest.mark.parametrize("template", TEMPLATES, ids=unit_of)
def test_dropin_alone_brings_the_unit_within_the_target(template, tmp_path):
    unit = unit_of(template)
    stage(tmp_path, unit, render(template))
    run = analyze(tmp_path, "security", "--offline=true", "--no-pager", instance_of(unit))
    scored = re.escape(instance_of(unit))
    match = re.search(rf"Overall exposure level for {scored}: (\d+\.\d+)", run.stdout)
    assert match, run.stdout[-1000:] + run.stderr[-1000:]
    assert float(match.group(1)) <= TARGET
    documented, where = {template_of(u): row for u, row in readme_table().items()}[unit]
    if where == "offline only":  # the documented figure for a unit no running host scored
        assert float(match.group(1)) <= documented
