"""Role django_kv's preflight refuses an ALLOWED_HOSTS that would let any Host header through
(the balancer passes Host on unchanged, so Django's check is the only one): an empty list (the
role's default: the inventory must set it) and "*" without the lab's explicit opt-in."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def check(extra):
    playbook = shutil.which("ansible-playbook") or str(ROOT / ".venv" / "bin" / "ansible-playbook")
    return subprocess.run(
        [playbook, str(HERE / "check_allowed_hosts.yml"), "-i", "localhost,",
         "-e", json.dumps(extra)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"},
    )  # fmt: skip


@pytest.mark.parametrize("hosts", [["kv.example.org"], ["kv.example.org", ".example.net"]])
def test_public_names_pass(hosts):
    run = check({"django_kv_allowed_hosts": hosts})
    assert run.returncode == 0, run.stdout[-3000:]
    assert "failed=0" in run.stdout


@pytest.mark.parametrize("extra", [
    {},  # the role's default: nothing set in the inventory
    {"django_kv_allowed_hosts": []},
    {"django_kv_allowed_hosts": ["*"]},
    {"django_kv_allowed_hosts": ["kv.example.org", "*"]},
    {"django_kv_allowed_hosts": ["kv.example.org", "a b"]},
])  # fmt: skip
def test_empty_wildcard_or_malformed_is_refused(extra):
    run = check(extra)
    assert run.returncode != 0
    assert "set it to the public names clients send in the Host header" in run.stdout, (
        run.stdout[-3000:])
    assert "inventory/sample/group_vars/all/site.yml" in run.stdout
    assert "django_kv_allow_any_host" in run.stdout


def test_the_wildcard_passes_with_the_labs_opt_in():
    run = check({"django_kv_allowed_hosts": ["*"], "django_kv_allow_any_host": True})
    assert run.returncode == 0, run.stdout[-3000:]
