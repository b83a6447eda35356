"""The elk role's defaults and meta/argument_specs.yml agree, and the preflight refuses bad input
with a message that says what to set."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml

from .conftest import HERE, REPO, ROLE, _playbook

DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SPECS = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
OPTIONS = SPECS["argument_specs"]["main"]["options"]


def test_every_default_is_declared_and_every_declaration_has_a_default():
    assert sorted(DEFAULTS) == sorted(OPTIONS)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_declared_default_equals_the_default(name):
    assert OPTIONS[name].get("default") == DEFAULTS[name], name
    assert OPTIONS[name].get("description"), f"{name} has no description"


def test_every_variable_is_prefixed_with_the_role_name():
    vars_main = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    for name in list(DEFAULTS) + list(vars_main):
        assert name.startswith("elk_"), name


def test_secrets_default_to_empty_and_are_no_log():
    for name in (
        "elk_elastic_password",
        "elk_kibana_system_password",
        "elk_logstash_writer_password",
    ):
        assert DEFAULTS[name] == ""
        assert OPTIONS[name].get("no_log") is True


PREFLIGHT_PLAY = """
- name: Preflight only
  hosts: logging
  gather_facts: true
  gather_subset: ["!all", "!min", "hardware", "virtual"]
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Preflight
      ansible.builtin.include_role:
        name: elk
        tasks_from: preflight.yml
"""


CASES = {
    "placeholder-password": (
        {"elk_elastic_password": "changeme"},
        "elk_elastic_password is empty, shorter than 12 characters, a placeholder",
    ),
    "empty-password": (
        {"elk_logstash_writer_password": ""},
        'elk_logstash_writer_password: "{{ vault_logstash_writer_password }}"',
    ),
    "major-7": ({"elk_major_version": 7}, "elk_major_version must be 8 or 9"),
    "heap-too-big": ({"elk_elasticsearch_heap_mb": 99999999}, "MiB does not fit in this host's"),
    "max-map-count": (
        {"elk_elasticsearch_max_map_count": 999999999, "elk_elasticsearch_manage_sysctl": False},
        "Elasticsearch needs at least 999999999",
    ),
}


@pytest.fixture(scope="module")
def preflight_runs(tmp_path_factory) -> dict[str, str]:
    """One ansible-playbook run; each case is a host of its own with the case's variables.
    Returns each case's failure output."""
    tmp = tmp_path_factory.mktemp("preflight")
    play = tmp / "preflight.yml"
    play.write_text(PREFLIGHT_PLAY)
    base = yaml.safe_load((HERE / "inventory" / "lab.yml").read_text())["all"]["vars"]
    inventory = tmp / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": base,
                    "children": {
                        "logging": {
                            "hosts": {
                                f"pf-{case}": {**extra, "internal_address": "127.0.0.1"}
                                for case, (extra, _) in CASES.items()
                            }
                        }
                    },
                }
            }
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.timer",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_FORKS": "10",
    }
    done = subprocess.run(
        [_playbook(), str(play), "-i", str(inventory)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    failures = {}
    for case in CASES:
        pattern = r"(?:fatal|failed): \[pf-" + re.escape(case) + r"\][^\n]*?=> (\{[^\n]*\})"
        failures[case] = " ".join(json.loads(m)["msg"] for m in re.findall(pattern, output))
    return failures


@pytest.mark.parametrize("case", list(CASES))
def test_preflight_refuses_with_a_message_that_says_what_to_set(preflight_runs, case):
    failure = preflight_runs[case]
    assert failure, f"the preflight accepted {CASES[case][0]}"
    assert CASES[case][1] in failure, failure[-3000:]


def test_molecule_scenario_uses_passwords_that_find_quoting_bugs():
    """molecule/elk/molecule.yml: quotes, spaces, backticks and $ (written $$, which Molecule
    turns into $) in every password."""
    scenario = (REPO / "molecule" / "elk" / "molecule.yml").read_text()
    assert re.search(r"\$(?!\$)[A-Za-z{]", scenario.replace("$$", "")) is None, (
        "a single $ followed by a name: Molecule would substitute an environment variable"
    )
    group_vars = yaml.safe_load(scenario)["provisioner"]["inventory"]["group_vars"]["all"]
    for name in (
        "elk_elastic_password",
        "elk_kibana_system_password",
        "elk_logstash_writer_password",
    ):
        value = group_vars[name].replace("$$", "$")
        for char in ("'", '"', "$", "`", " "):
            assert char in value, f"{name} has no {char!r}"
    platforms = yaml.safe_load(scenario)["platforms"]
    for platform in platforms:
        assert set(platform) == {"name", "groups"}, platform
        assert platform["name"].startswith("elk-"), platform
