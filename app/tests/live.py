"""The app served by a real gunicorn (the deployed configuration, gunicorn.conf.py) on a free
loopback port, over the test cluster, for the tests that need HTTP end to end."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

APP_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_gunicorn(env: dict[str, str], prefix: str, ready_path: str = "/healthz",
                  prepare: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Start gunicorn with ``env`` over the test environment, wait (30 s at most) until
    ``ready_path`` answers 200, yield {base, port, proc, log, metrics, tmp}; stop it (SIGTERM,
    then SIGKILL after 15 s) and remove its files however the block ends. ``prepare`` gets the
    metrics directory before the start."""
    port = free_port()
    tmp = tempfile.mkdtemp(prefix=prefix)
    metrics_dir = os.path.join(tmp, "metrics")
    os.makedirs(metrics_dir)
    if prepare is not None:
        prepare(metrics_dir)
    log_path = os.path.join(tmp, "stdout.log")
    full_env = {**os.environ, "KV_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
                "KV_INSTANCE": f"127.0.0.1:{port}", "KV_GRACEFUL_TIMEOUT": "5", **env}
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                 "kvsite.wsgi:application"],
                cwd=APP_DIR, env=full_env, stdout=log, stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if requests.get(base + ready_path, timeout=3).status_code == 200:
                            break
                    except requests.RequestException:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(Path(log_path).read_text())
                    time.sleep(0.2)
                yield {"base": base, "port": port, "proc": proc, "log": log_path,
                       "metrics": metrics_dir, "tmp": tmp}
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
