"""Role common's entry point `probe_repo`, the one probe of a vendor's apt repository (site.yml for
Elastic, role prometheus_grafana for Grafana, role elk's preflight): run by Ansible on this
machine against a real HTTP server on loopback, one host per case. A repository whose Release file
answers is reachable with no reason; a 404 or a closed port is not, with a reason that names the
repository, the host and the HTTP status; the probe changes nothing and never fails the run.
Grafana's skip reason, kept on the monitoring host and printed by the lab, keeps its wording."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

PLAY = """
- name: The probe alone
  hosts: probe
  gather_facts: false
  tasks:
    - name: Probe the case's repository
      ansible.builtin.include_role:
        name: common
        tasks_from: probe_repo
      vars:
        common_probe_url: "{{ case_url }}"
        common_probe_name: Case's apt repository
        common_probe_suite: "{{ case_suite | default('stable') }}"
        common_probe_timeout: 5
        common_probe_fact: case_repo

    - name: Show the fact
      ansible.builtin.debug:
        msg: "{{ case_repo }}"

- name: Grafana's decision
  hosts: grafana
  gather_facts: false
  tasks:
    - name: Probe Grafana's repository as playbooks/monitoring.yml does
      ansible.builtin.include_role:
        name: prometheus_grafana
        tasks_from: probe_grafana_repo.yml
        public: true  # the role's defaults, as the play's roles section gives them there

    - name: Show the decision
      ansible.builtin.debug:
        msg:
          enabled: "{{ prometheus_grafana_grafana_enabled | bool }}"
          reason: "{{ prometheus_grafana_grafana_skip_reason }}"
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict[str, dict], dict[str, int], dict[str, str]]:
    """One ansible-playbook run: (each host's fact or decision, each host's changed count,
    the URLs)."""
    tmp = tmp_path_factory.mktemp("probe")
    release = tmp / "www" / "repo" / "dists" / "stable" / "Release"
    release.parent.mkdir(parents=True)
    release.write_text("Origin: test\nSuite: stable\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp / "www"), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = {
        "ok": f"{base}/repo",
        "missing": f"{base}/missing",
        "closed": f"http://127.0.0.1:{_closed_port()}",
    }
    (tmp / "play.yml").write_text(PLAY)
    (tmp / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local",
                 "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "children": {
            "probe": {"hosts": {
                "pr-ok": {"case_url": urls["ok"]},
                "pr-missing": {"case_url": urls["missing"]},
                "pr-closed": {"case_url": urls["closed"]},
                "pr-suite": {"case_url": urls["ok"], "case_suite": "testing"},
            }},
            "grafana": {"hosts": {
                "gf-ok": {"prometheus_grafana_grafana_apt_repo_url": urls["ok"]},
                "gf-closed": {"prometheus_grafana_grafana_apt_repo_url": urls["closed"]},
                "gf-off": {"prometheus_grafana_grafana_apt_repo_url": urls["closed"],
                           "prometheus_grafana_grafana_enabled": False},
            }},
        }}}))  # fmt: skip
    playbook = shutil.which("ansible-playbook") or str(ROOT / ".venv/bin/ansible-playbook")
    try:
        done = subprocess.run(
            [playbook, str(tmp / "play.yml"), "-i", str(tmp / "hosts.yml")],
            cwd=ROOT, capture_output=True, text=True, timeout=180,
            env={**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
                 "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_CALLBACK_FORMAT_PRETTY": "0",
                 "ANSIBLE_FORKS": "10"},
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    recap = r"^([a-z]+-[a-z]+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0"
    changed = {h: int(c) for h, c in re.findall(recap, output, re.M)}
    assert len(changed) == 7, output[-3000:]
    debug = r"^ok: \[([a-z]+-[a-z]+)\] => (\{[^\n]*\"msg\"[^\n]*\})$"
    shown = {h: json.loads(body)["msg"] for h, body in re.findall(debug, output, re.M)}
    assert len(shown) == 7, output[-3000:]
    return shown, changed, urls


def test_a_repository_that_answers_is_reachable_without_a_reason(runs):
    shown, _, _ = runs
    assert shown["pr-ok"] == {"reachable": True, "status": 200, "reason": ""}


def test_a_missing_release_file_is_unreachable_with_the_status(runs):
    shown, _, urls = runs
    fact = shown["pr-missing"]
    assert fact["reachable"] is False
    assert fact["status"] == 404
    assert fact["reason"].startswith(
        f"Case's apt repository {urls['missing']} is unreachable from pr-missing (HTTP 404: "
    ), fact


def test_the_suite_names_the_release_file(runs):
    shown, _, _ = runs
    assert shown["pr-suite"]["reachable"] is False
    assert shown["pr-suite"]["status"] == 404


def test_no_answer_is_unreachable_with_the_error(runs):
    shown, _, urls = runs
    fact = shown["pr-closed"]
    assert fact["reachable"] is False
    assert fact["status"] == -1
    assert fact["reason"].startswith(
        f"Case's apt repository {urls['closed']} is unreachable from pr-closed (HTTP -1: "
        "Status code was -1 and not [200]: Request failed: <urlopen error "
    ), fact
    assert fact["reason"].endswith(")")


def test_the_probe_changes_nothing(runs):
    _, changed, _ = runs
    assert changed == dict.fromkeys(changed, 0)


def test_grafana_is_kept_when_its_repository_answers(runs):
    shown, _, _ = runs
    assert shown["gf-ok"] == {"enabled": True, "reason": ""}


def test_grafana_is_skipped_with_the_reason_the_lab_keeps(runs):
    """The wording of ansible_local.prometheus_grafana.skipped_components[].reason on a lab
    monitoring host (lab/summary.yml and the stack tests read it)."""
    shown, _, urls = runs
    assert shown["gf-closed"]["enabled"] is False
    start = (
        f"Grafana's apt repository {urls['closed']} is unreachable from gf-closed (HTTP -1: "
        "Status code was -1 and not [200]: Request failed: <urlopen error "
    )
    reason = shown["gf-closed"]["reason"]
    assert re.fullmatch(re.escape(start) + r"[^\n]+>\)", reason), reason


def test_grafana_turned_off_by_the_operator_is_not_probed(runs):
    shown, _, _ = runs
    assert shown["gf-off"] == {
        "enabled": False,
        "reason": "prometheus_grafana_grafana_enabled is false in the inventory",
    }
