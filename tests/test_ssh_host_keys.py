"""SSH host key checking stays on for SSH inventories (ansible.cfg), the lab is reached with
docker exec (no host keys involved), and its SSH mode (inventory/lab-ssh) is the same hosts over
SSH with the known_hosts that `make lab` writes. The SSH command lines are read from Ansible's
own debug output: its hosts are in the documentation range 192.0.2.0/24, so the
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


def _inventory(name):
    run = _run([
        _tool("ansible-inventory"), "-i", f"inventory/{name}", "--list",
        "--vault-password-file", "inventory/lab/vault-password.txt",
    ])  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    # an inventory source that does not parse is only a warning for Ansible: not here
    assert "Unable to parse" not in run.stderr, run.stderr[-2000:]
    # values an inventory plugin composed come tagged as unsafe: {"__ansible_unsafe": value}
    return json.loads(run.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))


def test_lab_hosts_use_docker_exec_not_ssh():
    hostvars = _inventory("lab")["_meta"]["hostvars"]
    assert len(hostvars) == 9
    connections = {h: v.get("ansible_connection") for h, v in hostvars.items()}
    assert set(connections.values()) == {"community.docker.docker"}, connections


def test_lab_ssh_mode_is_the_lab_over_ssh_with_sudo_and_known_hosts():
    lab, ssh = _inventory("lab"), _inventory("lab-ssh")
    for group in ("lb", "app", "postgres", "dcs", "monitoring", "logging"):
        assert sorted(_members(ssh, group)) == sorted(_members(lab, group)), group
    home = os.environ["HOME"]
    for host, hv in ssh["_meta"]["hostvars"].items():
        assert hv["ansible_connection"] == "ssh", host
        assert hv["ansible_host"] == lab["_meta"]["hostvars"][host]["internal_address"], host
        assert hv["kvlab_container"] == lab["_meta"]["hostvars"][host]["ansible_host"], host
        assert hv["ansible_user"] == "kvadmin" and hv["ansible_become"] is True, host
        # the group vars (vault included) are the lab's own
        assert hv["vault_replication_password"] == \
            lab["_meta"]["hostvars"][host]["vault_replication_password"]

    # Ansible's own ssh command line: the lab's known_hosts, strict checking, the lab's key.
    run = _run([
        _tool("ansible"), "-i", "inventory/lab-ssh", "app1", "-m", "ansible.builtin.ping",
        "--vault-password-file", "inventory/lab/vault-password.txt",
        "-e", "ansible_host=192.0.2.21", "-e", "ansible_ssh_timeout=2", "-vvv",
    ])  # fmt: skip
    commands = re.findall(r"SSH: EXEC (.*)", run.stdout + run.stderr)
    assert commands, (run.stdout + run.stderr)[-2000:]
    for c in commands:
        assert "UserKnownHostsFile=~/.local/share/kvlab/ssh/known_hosts" in c, c
        assert "StrictHostKeyChecking=yes" in c and "StrictHostKeyChecking=no" not in c, c
        assert f"{home}/.local/share/kvlab/ssh/id_ed25519" in c and "kvadmin" in c, c


def _members(inventory, group):
    data = inventory.get(group, {})
    hosts = list(data.get("hosts", []))
    for child in data.get("children", []):
        hosts += _members(inventory, child)
    return hosts
