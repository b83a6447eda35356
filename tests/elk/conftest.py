"""Fixtures of the elk role's repository-level tests: templates rendered by Ansible itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(sys.executable).parent
ROLE = REPO / "roles" / "elk"


def _inventories() -> dict[str, tuple[Path, Path | None]]:
    out: dict[str, tuple[Path, Path | None]] = {
        "lab-like": (HERE / "inventory" / "lab.yml", None),
        "cluster": (HERE / "inventory" / "cluster.yml", None),
    }
    lab = REPO / "inventory" / "lab"
    if (lab / "hosts.yml").exists():
        vault = lab / "vault-password.txt"
        out["inventory/lab"] = (lab, vault if vault.exists() else None)
    return out


INVENTORIES = _inventories()


@dataclass
class Render:
    name: str
    returncode: int
    log: str
    files: dict[str, dict[str, str]]  # host -> file name -> rendered text
    api: dict[str, dict]  # host -> API bodies and derived facts

    def hosts_with(self, file_name: str) -> list[str]:
        return [h for h, files in self.files.items() if file_name in files]


def _playbook() -> str:
    exe = BIN / "ansible-playbook"
    return str(exe) if exe.exists() else "ansible-playbook"


@pytest.fixture(scope="session")
def renders(tmp_path_factory) -> dict[str, Render]:
    """Render every template for every inventory; the ansible-playbook runs go in parallel."""
    tmp = tmp_path_factory.mktemp("elk-render")
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_FORKS": "20",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.timer",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    running = {}
    for name, (inventory, vault) in INVENTORIES.items():
        out = tmp / (name.replace("/", "_") + ".json")
        cmd = [
            _playbook(),
            str(HERE / "render.yml"),
            "-i",
            str(inventory),
            "--tags",
            "elk_render",
            "-e",
            f"elk_render_out={out}",
        ]
        if vault:
            cmd += ["--vault-password-file", str(vault)]
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        running[name] = (proc, out)
    results = {}
    for name, (proc, out) in running.items():
        log, _ = proc.communicate(timeout=300)
        ok = proc.returncode == 0
        results[name] = Render(
            name=name,
            returncode=proc.returncode,
            log=log,
            files=json.loads(out.read_text())["files"] if ok else {},
            api=json.loads(out.read_text())["api"] if ok else {},
        )
    return results


@pytest.fixture(params=list(INVENTORIES))
def render(request, renders) -> Render:
    result = renders[request.param]
    if result.returncode != 0:
        pytest.fail(
            f"rendering the elk templates with {request.param} failed:\n{result.log[-6000:]}"
        )
    return result
