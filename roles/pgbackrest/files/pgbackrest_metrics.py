#!/usr/bin/python3
"""Write pgBackRest's state as Prometheus metrics for the node exporter's textfile collector.

Reads `pgbackrest info --output=json` (run as the repository's user when started as root) and
writes <dir>/pgbackrest.prom atomically (a temporary file in the same directory, then a rename),
so the exporter never reads half a file. When pgBackRest cannot be read, the file says so
(pgbackrest_metrics_up 0) and keeps the time of the last successful read.

Metrics (docs: roles/pgbackrest/README.md):
  pgbackrest_backup_last_completion_timestamp_seconds{stanza,type}  newest backup of the type or
      of a more complete one (a full counts as a diff and as an incr, a diff as an incr)
  pgbackrest_backup_last_size_bytes{stanza,type}   what that backup stored in the repository
  pgbackrest_repo_size_bytes{stanza}               what every backup stored in the repository
  pgbackrest_stanza_status{stanza}                 pgBackRest's status code (0: ok)
  pgbackrest_metrics_last_success_timestamp_seconds, pgbackrest_metrics_up
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A type counts backups of itself and of every more complete type.
COUNTS_AS = {"full": ("full",), "diff": ("full", "diff"), "incr": ("full", "diff", "incr")}
FILE_NAME = "pgbackrest.prom"
LAST_SUCCESS = re.compile(r"^pgbackrest_metrics_last_success_timestamp_seconds (\S+)$", re.M)

HELP = {
    "pgbackrest_backup_last_completion_timestamp_seconds": (
        "gauge",
        "Completion time of the newest backup of this type or of a more complete one.",
    ),
    "pgbackrest_backup_last_size_bytes": (
        "gauge",
        "Bytes that backup stored in the repository.",
    ),
    "pgbackrest_repo_size_bytes": (
        "gauge",
        "Bytes every backup of the stanza stored in the repository.",
    ),
    "pgbackrest_stanza_status": ("gauge", "pgBackRest status code of the stanza (0: ok)."),
    "pgbackrest_metrics_last_success_timestamp_seconds": (
        "gauge",
        "Time pgBackRest's state was last read successfully.",
    ),
    "pgbackrest_metrics_up": ("gauge", "1 when the last read of pgBackRest's state succeeded."),
}


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}"


def samples_from_info(info: list[dict]) -> list[tuple[str, dict[str, str], float]]:
    """The metrics of every stanza in a `pgbackrest info --output=json` document."""
    out: list[tuple[str, dict[str, str], float]] = []
    for stanza in info:
        name = stanza["name"]
        out.append(("pgbackrest_stanza_status", {"stanza": name}, stanza["status"]["code"]))
        backups = [b for b in stanza.get("backup", []) if not b.get("error", False)]
        repo = sum(b["info"]["repository"]["delta"] for b in backups)
        out.append(("pgbackrest_repo_size_bytes", {"stanza": name}, repo))
        for kind, counted in COUNTS_AS.items():
            done = [b for b in backups if b["type"] in counted]
            if not done:
                continue  # no such backup yet: the series is absent
            newest = max(done, key=lambda b: b["timestamp"]["stop"])
            labels = {"stanza": name, "type": kind}
            out.append(
                (
                    "pgbackrest_backup_last_completion_timestamp_seconds",
                    labels,
                    newest["timestamp"]["stop"],
                )
            )
            out.append(
                ("pgbackrest_backup_last_size_bytes", labels, newest["info"]["repository"]["delta"])
            )
    return out


def render(samples: list[tuple[str, dict[str, str], float]]) -> str:
    lines: list[str] = []
    for metric, (kind, text) in HELP.items():
        rows = [_sample(n, labels, v) for n, labels, v in samples if n == metric]
        if not rows:
            continue
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", *rows]
    return "\n".join(lines) + "\n"


def previous_success(path: Path) -> float | None:
    try:
        match = LAST_SUCCESS.search(path.read_text())
    except OSError:
        return None
    return float(match.group(1)) if match else None


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_info(stanza: str, config: str, user: str | None, timeout: float) -> list[dict]:
    argv = [
        "pgbackrest",
        f"--config={config}",
        f"--stanza={stanza}",
        "--output=json",
        "--log-level-console=off",
        "--log-level-stderr=error",
        "info",
    ]
    kwargs = {"user": user, "group": user, "extra_groups": []} if user and os.geteuid() == 0 else {}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=True, cwd="/", **kwargs
    )
    info = json.loads(done.stdout)
    if not isinstance(info, list):
        raise ValueError("pgbackrest info did not return a list of stanzas")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stanza", required=True)
    parser.add_argument("--dir", required=True, type=Path, help="textfile collector directory")
    parser.add_argument("--config", default="/etc/pgbackrest/pgbackrest.conf")
    parser.add_argument("--user", help="run pgbackrest as this user (when started as root)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds pgbackrest may take")
    parser.add_argument("--info-json", type=Path, help="read this document instead of pgbackrest")
    args = parser.parse_args(argv)

    target = args.dir / FILE_NAME
    now = time.time()
    try:
        if args.info_json:
            info = json.loads(args.info_json.read_text())
        else:
            info = read_info(args.stanza, args.config, args.user, args.timeout)
        info = [s for s in info if s.get("name") == args.stanza]
        if not info:
            raise ValueError(f"stanza {args.stanza} not in pgbackrest info")
        samples = samples_from_info(info)
    except (OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        print(f"pgbackrest-metrics: cannot read pgBackRest's state: {detail}", file=sys.stderr)
        samples = [("pgbackrest_metrics_up", {}, 0)]
        last = previous_success(target)
        if last is not None:
            samples.append(("pgbackrest_metrics_last_success_timestamp_seconds", {}, last))
        write_atomically(target, render(samples))
        return 1
    samples += [
        ("pgbackrest_metrics_last_success_timestamp_seconds", {}, round(now, 3)),
        ("pgbackrest_metrics_up", {}, 1),
    ]
    write_atomically(target, render(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
