"""Where the lab's files are, and the bounds and rates every fault run uses.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import urllib3

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

ROOT = Path(__file__).resolve().parents[3]
INVENTORY = ROOT / "inventory" / "lab"
VAULT = INVENTORY / "group_vars" / "all" / "vault.yml"
VAULT_PASSWORD = INVENTORY / "vault-password.txt"
RESULTS = Path(os.environ.get("KV_CHAOS_RESULTS", ROOT / ".cache" / "chaos"))
PY_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
# The app's documented margin over its deadlines (app/README.md, "Write deadline": a write answers
# within KV_WRITE_TIMEOUT + 1.5 s), held against reads and KV_READ_TIMEOUT as well: no request
# may outlive its deadline by more than this.
DEADLINE_MARGIN = 1.5
# Reads that do not need the faulty node keep their p99 within 2x the baseline's, or within the
# baseline + this floor when that is more (a 3 ms baseline must not make a flaky 6 ms bound).
LATENCY_FLOOR = 0.1
READ_LEVELS = ("quorum", "primary", "one", "token")
# Readers of their own for the reads that do not need the faulty node: the workload's clients
# block on writes while a node is frozen, so they would hardly sample those reads. Reads per
# second in all (the clients' 150 + these + the purge fault's 20 stay under nginx's 200).
INDEPENDENT_READERS = 2
INDEPENDENT_RATE = 16.0
# Seconds a tombstone must be older than for kv_purge_tombstones (the command's minimum, 60).
PURGE_HORIZON = int(os.environ.get("KV_CHAOS_PURGE_HORIZON", "").strip() or 60)
# The purge as app1 runs it (the role's wrapper: the current release, the service's user and
# environment); another release's command can be put here to see the fault catch it.
PURGE_COMMAND = shlex.split(os.environ.get("KV_CHAOS_PURGE_COMMAND", "").strip()
                            or "/usr/local/sbin/kv-manage kv_purge_tombstones")


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default

