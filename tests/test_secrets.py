"""Role common's entry point `secrets`, the one check of secrets every role's preflight makes
(docs/conventions.md, "Secrets"): run by Ansible on this machine, one host per case, through
the same include_role the preflights use. Each bad value fails with a message that names the
variable and its vault variable; no value appears in the output; good values pass."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GOOD = "a real 'secret' with $ and `ticks`"
TOKENS_GOOD = [{"name": "rw", "token": "t" * 10 + "0123456789abcdef", "scopes": ["read"]}]

PLAY = """
- name: The secrets check alone
  hosts: all
  gather_facts: false
  tasks:
    - name: Check the secrets
      ansible.builtin.include_role:
        name: common
        tasks_from: secrets
      vars:
        common_secrets:
          - {name: case_password, vault: vault_case_password}
          - {name: case_tokens, vault: vault_case_tokens, field: token, min_length: 20}
"""

# case: (case_password, case_tokens, the message's words; None = passes)
CASES = {
    "good": (GOOD, TOKENS_GOOD, None),
    "empty": ("", TOKENS_GOOD, "case_password is empty, shorter than 12 characters"),
    "unset": (None, TOKENS_GOOD, 'case_password: "{{ vault_case_password }}"'),
    "short": ("short-pw-11", TOKENS_GOOD, "shorter than 12 characters"),
    "placeholder": ("CHANGEME", TOKENS_GOOD, "a placeholder (changeme, change_me"),
    "placeholder-long": ("<ChangeMe>", TOKENS_GOOD, "case_password is empty"),
    "newline": ("two lines of\nsecret text", TOKENS_GOOD, "holds a line break"),
    "not-a-string": (123456789012345, TOKENS_GOOD, "case_password is empty"),
    "short-token": (GOOD, [*TOKENS_GOOD, {"name": "x", "token": "only-19-characters!"}],
                    "case_tokens (the token of each entry) is empty, shorter than 20"),
    "placeholder-token": (GOOD, [{"name": "x", "token": "TODO"}], "case_tokens (the token"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[bool, str]]:
    """One ansible-playbook run, one host per case: (failed, that host's output lines)."""
    tmp = tmp_path_factory.mktemp("secrets")
    (tmp / "play.yml").write_text(PLAY)
    hosts = {}
    for case, (password, tokens, _) in CASES.items():
        host = {"case_tokens": tokens}
        if password is not None:
            host["case_password"] = password
        hosts[f"sc-{case}"] = host
    (tmp / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local",
                 "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "hosts": hosts}}))
    playbook = shutil.which("ansible-playbook") or str(ROOT / ".venv/bin/ansible-playbook")
    done = subprocess.run(
        [playbook, str(tmp / "play.yml"), "-i", str(tmp / "hosts.yml")],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_FORKS": "10"},
    )  # fmt: skip
    output = done.stdout + done.stderr
    recap = dict(re.findall(r"^(sc-[\w-]+)\s+: ok=\d+\s+changed=\d+\s+unreachable=\d+\s+"
                            r"failed=(\d+)", output, re.M))
    assert set(recap) == {f"sc-{c}" for c in CASES}, output[-3000:]
    out = {}
    for case in CASES:
        msgs = [json.loads(m).get("msg", "") for m in re.findall(
            r"(?:fatal|failed): \[sc-" + re.escape(case) + r"\][^\n]*?=> (\{[^\n]*\})", output)]
        out[case] = (recap[f"sc-{case}"] != "0", " ".join(msgs))
    out["_all"] = (done.returncode != 0, output)
    return out


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][2] is not None])
def test_a_bad_secret_fails_naming_what_to_set(runs, case):
    failed, message = runs[case]
    assert failed, f"{case} passed the check"
    assert CASES[case][2] in message, message
    assert "group_vars/all/vault.yml" in message, message


def test_good_secrets_pass(runs):
    failed, message = runs["good"]
    assert not failed, message


def test_no_value_is_in_the_output(runs):
    _, output = runs["_all"]
    for password, tokens, _ in CASES.values():
        values = [password] if isinstance(password, str) and len(password) > 6 else []
        values += [t["token"] for t in tokens]
        for value in values:
            assert value not in output, f"{value!r} is in the output"


def test_every_preflight_checks_its_secrets_through_the_entry_point():
    """No role keeps a check of its own: the roles with secrets include common's `secrets`, no
    preflight compares with a placeholder list and no role defines one."""
    users = set()
    for preflight in sorted(ROOT.glob("roles/*/tasks/preflight.yml")):
        text = preflight.read_text()
        assert not re.search(r"not in \w*placeholder", text), preflight
        if "tasks_from: secrets" in text:
            users.add(preflight.parts[-3])
    assert users == {"django_kv", "elk", "nginx", "node_exporter", "pgbackrest",
                     "postgres_replication", "prometheus_grafana"}
    for variables in ROOT.glob("roles/*/vars/main.yml"):
        assert "placeholder" not in variables.read_text(), variables
