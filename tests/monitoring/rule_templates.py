"""The alert rule files of prometheus_grafana as Prometheus loads them: files/rules/*.rules.yml as
they are, templates/*.rules.yml.j2 rendered by Ansible's templating with the role's defaults and
vars and a test inventory's groups (the thresholds are role variables)."""

from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "prometheus_grafana"
STATIC = sorted((ROLE / "files" / "rules").glob("*.rules.yml"))
TEMPLATES = sorted((ROLE / "templates").glob("*.rules.yml.j2"))
GROUPS = {
    "all": ["lb1", "app1", "pg1", "pg2", "pg3", "mon1", "backup1"],
    "lb": ["lb1"],
    "app": ["app1"],
    "dcs": ["pg1", "pg2", "pg3"],
    "postgres": ["pg1", "pg2", "pg3"],
    "monitoring": ["mon1"],
    "backup": ["backup1"],
}


def role_variables(**extra):
    variables = {"ansible_managed": "Ansible managed", "groups": GROUPS}
    for part in ("defaults", "vars"):
        variables.update(yaml.safe_load((ROLE / part / "main.yml").read_text()) or {})
    variables.update(extra)
    return variables


def render(template, **extra):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    text = Templar(loader=DataLoader(), variables=role_variables(**extra)).template(
        trust_as_template(template.read_text())
    )
    return text


def rule_texts(**extra):
    """{file name: text} of every rule file, the templates rendered with the role's defaults."""
    out = {p.name: p.read_text() for p in STATIC}
    out.update({p.name.removesuffix(".j2"): render(p, **extra) for p in TEMPLATES})
    return out
