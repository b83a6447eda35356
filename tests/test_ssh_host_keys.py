"""SSH host key checking stays on for SSH inventories (ansible.cfg), and the lab is reached with
docker exec (no host keys involved). The sample inventory's SSH command line is read from
Ansible's own debug output: its hosts are in the documentation range 192.0.2.0/24, so the
connection attempt reaches nothing and ends after a short timeout."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool(name):
    return shutil.which(name) or str(ROOT / ".venv" / "bin" / name)


def _run(args, timeout=60):
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )  # fmt: skip


def test_sample_inventory_connects_over_ssh_with_host_key_checking():
    run = _run([
        _tool("ansible"), "-i", "inventory/sample", "lb-1", "-m", "ansible.builtin.ping",
        "-e", "ansible_ssh_timeout=2", "-vvv",
    ])  # fmt: skip
    out = run.stdout + run.stderr
    commands = re.findall(r"SSH: EXEC (.*)", out)
    assert commands, out[-2000:]
    assert all("192.0.2.10" in c for c in commands), commands
    # Ansible adds StrictHostKeyChecking=no to every ssh command when host_key_checking is off.
    assert not any("StrictHostKeyChecking=no" in c for c in commands), commands


def test_lab_hosts_use_docker_exec_not_ssh():
    run = _run([
        _tool("ansible-inventory"), "-i", "inventory/lab", "--list",
        "--vault-password-file", "inventory/lab/vault-password.txt",
    ])  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    hostvars = json.loads(run.stdout)["_meta"]["hostvars"]
    assert len(hostvars) == 8
    connections = {h: v.get("ansible_connection") for h, v in hostvars.items()}
    assert set(connections.values()) == {"community.docker.docker"}, connections
