"""Capture recent log lines from the running lab for the pipeline field tests.

    python tests/elk/lab_samples.py DIR     # writes DIR/app.jsonl, nginx.jsonl, postgresql.log
    KV_LAB_LOG_SAMPLES=DIR pytest tests/elk

Without KV_LAB_LOG_SAMPLES, tests/elk/test_pipeline_fields.py calls capture() itself when the lab's
containers (kvlab-<host>, docs/conventions.md) are running.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

# (file written, container, shell command printing the newest lines of that log)
SOURCES = [
    ("app.jsonl", "kvlab-app1", "tail -q -n 200 /var/log/kv/kv-*.log 2>/dev/null"),
    ("nginx.jsonl", "kvlab-lb1", "tail -n 200 /var/log/nginx/kv_access.json 2>/dev/null"),
    (
        "postgresql.log",
        "kvlab-pg1",
        "tail -q -n 200 /var/log/postgresql/postgresql-*.log 2>/dev/null",
    ),
]


# The app logs every write and every failed or slow read (KV_ACCESS_LOG=writes): one request
# without a token (401) to an instance makes sure an access line is among the lines taken.
ACCESS_LINE = ("kvlab-app1", (
    "python3 -c 'import sys, urllib.request, urllib.error\n"
    "try:\n    urllib.request.urlopen(sys.argv[1], timeout=5)\n"
    "except urllib.error.HTTPError:\n    pass' "
    "\"http://$(hostname -i | cut -d' ' -f1):8000/api/kv/lab-sample\" >/dev/null 2>&1"))


def capture(dest: Path) -> dict[str, str]:
    """Write the lines of every lab log found into dest; returns {file name: container}."""
    if shutil.which("docker") is None:
        return {}
    dest.mkdir(parents=True, exist_ok=True)
    container, command = ACCESS_LINE
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["docker", "exec", container, "sh", "-c", command],
                       capture_output=True, timeout=20)
    found = {}
    for name, container, command in SOURCES:
        try:
            done = subprocess.run(
                ["docker", "exec", container, "sh", "-c", command],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except subprocess.TimeoutExpired:
            continue
        lines = [x for x in done.stdout.splitlines() if x.strip()]
        if done.returncode == 0 and lines:
            if name.endswith(".jsonl"):
                lines = [x for x in lines if x.lstrip().startswith("{")]
            if name == "postgresql.log":
                # Start at the first line that begins an event.
                while lines and not lines[0][:4].isdigit():
                    lines.pop(0)
            if lines:
                (dest / name).write_text("\n".join(lines) + "\n")
                found[name] = container
    return found


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    got = capture(Path(sys.argv[1]))
    print(", ".join(f"{n} from {c}" for n, c in got.items()) or "no lab log found")
