"""Run one Molecule scenario from a pytest gate (the vendor-only scenarios: grafana, elk)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_scenario(name: str, timeout: int = 3600) -> None:
    """`molecule test -s NAME` with the running interpreter's tools first on PATH; fails the
    calling test with the end of Molecule's output when the scenario fails."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["molecule", "test", "-s", name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"molecule test -s {name} failed:\n{output[-8000:]}"
