"""The lab's SSH mode (inventory/lab-ssh), the path real users take: the known_hosts that
`make lab` writes holds every host's own key (read through docker exec), a host whose key does
not match is refused, and the deploy user is not root: root's work needs sudo."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .harness import PY_BIN, ROOT, dexec

SSH_DIR = Path(os.environ.get("HOME", "/root")) / ".local" / "share" / "kvlab" / "ssh"
KEY = SSH_DIR / "id_ed25519"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
USER = "kvadmin"

pytestmark = pytest.mark.lab


def _ssh(address: str, command: str, known_hosts: Path = KNOWN_HOSTS, timeout: float = 30):
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(KEY), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=10", f"{USER}@{address}", command],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def only_file(known_hosts: Path) -> str:
    return f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null"


def _known_hosts() -> dict[str, str]:
    keys = {}
    for line in KNOWN_HOSTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            address, kind, key = line.split()[:3]
            keys[address] = f"{kind} {key}"
    return keys


def test_known_hosts_holds_each_hosts_own_key(lab):
    keys = _known_hosts()
    assert set(keys) == set(lab.addresses.values()), keys
    for host, address in lab.addresses.items():
        own = dexec(host, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
        assert keys[address] == " ".join(own), host
    # made at each container's first boot, not baked into the image
    assert len(set(keys.values())) == len(keys), keys


def test_deploy_user_logs_in_and_needs_sudo_for_root_work(lab):
    address = lab.addresses["pg1"]
    who = _ssh(address, "id -u; id -un")
    assert who.returncode == 0, who.stderr
    uid, name = who.stdout.split()
    assert name == USER and uid != "0", who.stdout
    denied = _ssh(address, "cat /etc/shadow")
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    denied = _ssh(address, "touch /etc/kvlab-not-root")
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    root = _ssh(address, "sudo -n id -u")
    assert root.returncode == 0 and root.stdout.strip() == "0", root


def test_a_host_key_that_does_not_match_is_refused(lab, tmp_path):
    address = lab.addresses["app1"]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                   check=True, timeout=30)  # fmt: skip
    other = (tmp_path / "other.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{address} {' '.join(other)}\n")
    refused = _ssh(address, "true", known_hosts=wrong)
    assert refused.returncode == 255, refused
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr, refused.stderr
    assert "Host key verification failed" in refused.stderr, refused.stderr

    # Ansible over inventory/lab-ssh pointed at the same wrong key, then at an empty known_hosts
    # (a host never checked): the run stops there. The SSH arguments given here name only the
    # file, so what refuses is ansible.cfg's host key checking, not an option of this test.
    empty = tmp_path / "empty"
    empty.write_text("")
    ansible = [str(PY_BIN / "ansible"), "-i", "inventory/lab-ssh", "app1",
               "-m", "ansible.builtin.ping",
               "--vault-password-file", "inventory/lab/vault-password.txt"]  # fmt: skip
    for known_hosts in (wrong, empty):
        run = subprocess.run(
            [*ansible, "-e", f"ansible_ssh_common_args='{only_file(known_hosts)}'"],
            capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
            env={**os.environ, "ANSIBLE_FORCE_COLOR": "0",
                 "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        )  # fmt: skip
        out = run.stdout + run.stderr
        assert run.returncode != 0 and "UNREACHABLE" in out, out[-2000:]
        assert "Host key verification failed" in out, out[-2000:]
    ok = _ssh(address, "true")
    assert ok.returncode == 0, ok.stderr
