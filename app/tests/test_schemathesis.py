"""schemathesis against the live app: real gunicorn on loopback over the fixture cluster, every
operation of the OpenAPI schema (/api/schema/) driven with positive and negative data, the
answers checked against the schema: no 5xx, only declared status codes, declared content types,
headers and bodies, and every request the schema calls invalid refused with a 4xx."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TOKENS
from tests.live import APP_DIR, live_gunicorn

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance", "positive_data_acceptance",
    "negative_data_rejection", "missing_required_header", "unsupported_method", "ignored_auth",
])
# A request the schema calls valid may still meet a key that exists (409 on create), is absent
# (404) or has another version (412): anything else, 400 included, means the schema promised
# more than the service accepts.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "409", "412"]

# The coverage phase of schemathesis 4.32.5 generates header values from [A-Za-z0-9] only: it
# has no valid X-KV-Token (digits, "-", "/") and sends an invalid one in cases it calls valid.
# The fuzzing phase generates the header from its pattern and covers kv_get.
[[operations]]
include-operation-id = "kv_get"
phases.coverage.enabled = false
"""
# Bounds: examples per operation and phase, seconds per request, seconds for the whole run.
MAX_EXAMPLES = 40
REQUEST_TIMEOUT = 10
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def live_app():
    with live_gunicorn({"KV_WORKERS": "2", "KV_THREADS": "2", "KV_ACCESS_LOG": "false"},
                       "kvschemathesis-", ready_path="/readyz") as live:
        yield live


def test_schemathesis_finds_no_failure(live_app):
    tmp = live_app["tmp"]
    config = os.path.join(tmp, "schemathesis.toml")
    Path(config).write_text(CONFIG)
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", config, "run",
        f"{live_app['base']}/api/schema/?format=json",
        "--header", f"Authorization: Bearer {TOKENS['rw'][1]}",
        "--checks", CHECKS, "--mode", "all",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(MAX_EXAMPLES), "--seed", "14",
        "--workers", "1", "--request-timeout", str(REQUEST_TIMEOUT),
        "--output-sanitize", "false",
    ]
    env = {**os.environ, "PYTHONPATH": str(APP_DIR),
           "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"}
    # cwd: schemathesis keeps its cache and reports in the working directory
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, out[-20000:]
    assert "Operations:       6 selected / 6 total" in out, out[-5000:]
