"""Split the CPU time of the app's gunicorn by layer, from py-spy samples taken under wrk.

    KV_BENCH_PROFILE=/tmp/kvprof KV_BENCH_DURATION=20 KV_BENCH_ROUNDS=2 make bench-app
    python bench/profile_layers.py /tmp/kvprof            # (bench.sh runs it at the end)
    python bench/profile_layers.py /tmp/kvprof get_one 30 # the 30 hottest innermost frames

The directory holds, per case and round, ``<case>.<round>.txt`` (``py-spy record --gil --rate
200 --format raw --subprocesses``: one line per distinct stack, ``frame;frame;... count``, root
first) and the round's ``.wrk`` and ``.cpu`` files (bench/app_report.py). With ``--gil`` only the
thread holding the GIL is sampled: the samples are the Python CPU time of every worker (a thread
waiting on a socket, a lock or poll() released the GIL and is not counted), at RATE per second,
so samples / RATE / requests is a layer's Python CPU per request. The rest of the measured CPU
(utime+stime) is spent without the GIL: the kernel's side of the sockets, libpq.

A sample is charged to the innermost frame of the stack that belongs to a layer of LAYERS;
standard-library frames (json, socket, threading...) charge their caller, so JSON encoding inside
the log formatter counts as logging.
"""

from __future__ import annotations

import glob
import os
import re
import sys

if __package__:
    from . import app_report
else:  # run as a file: its own directory is first on sys.path
    import app_report

# (layer, pattern on a frame's file path): the first match wins, so specific before general.
LAYERS = [
    ("logging (kv.logjson, logging)", r"kv/logjson\.py|(^|/)logging/"),
    ("metrics (kv.httpmetrics, django_prometheus)", r"kv/httpmetrics\.py|django_prometheus/"),
    ("metrics (prometheus_client)", r"prometheus_client/"),
    ("kv.middleware (request id, access log fields)", r"kv/middleware\.py"),
    ("auth (kv.auth)", r"kv/auth\.py"),
    ("DRF (rest_framework)", r"rest_framework/"),
    ("KV engine (kv.*)", r"kv/(?!logjson|middleware|auth|httpmetrics)[a-z_]+\.py"),
    ("minimal project view", r"minimal_site\.py"),
    ("psycopg2", r"psycopg2/"),
    ("Django DB layer (django.db)", r"django/db/"),
    ("Django middleware: security", r"django/middleware/security\.py"),
    ("Django middleware: common", r"django/middleware/common\.py"),
    ("Django middleware: csrf", r"django/middleware/csrf\.py"),
    ("Django middleware: clickjacking", r"django/middleware/clickjacking\.py"),
    ("Django handler, URL resolver, request/response", r"django/"),
    ("gunicorn worker (HTTP parsing, sockets)", r"gunicorn/"),
]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
OTHER = "other (interpreter, stdlib roots)"
RATE = 200  # samples per second, as app/bench.sh runs py-spy


def layer_of(stack: list[str]) -> str:
    """``stack``: frames root first, each ``func (file:line)``."""
    for frame in reversed(stack):
        m = _FRAME.match(frame)
        path = m.group("file") if m else frame
        for name, pattern in LAYERS:
            if re.search(pattern, path):
                return name
    return OTHER


def parse_raw(text: str, by_frame: bool = False) -> dict[str, int]:
    """Samples per layer (or, ``by_frame``, per layer and innermost non-stdlib frame)."""
    samples: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        key = layer_of(frames)
        if by_frame and frames:
            key += " | " + frames[-1]
        samples[key] = samples.get(key, 0) + int(count)
    return samples


def breakdown(directory: str) -> dict[str, dict]:
    """case -> {"samples", "cpu_ms_per_request", "python_ms_per_request",
    "layers": {layer: (share of the samples, Python CPU ms per request)}}"""
    out = {}
    rounds = app_report.load(directory)
    for name, runs in rounds.items():
        samples: dict[str, int] = {}
        for path in glob.glob(os.path.join(directory, f"{name}.*.txt")):
            with open(path) as f:
                for k, v in parse_raw(f.read()).items():
                    samples[k] = samples.get(k, 0) + v
        total = sum(samples.values())
        if not total:
            continue
        requests = sum(r["requests"] for r in runs)
        cpu_ms = sum(r.get("cpu_s", 0.0) for r in runs) * 1000 / requests if requests else 0.0
        if not requests:
            continue
        out[name] = {"samples": total, "cpu_ms_per_request": cpu_ms,
                     "python_ms_per_request": total / RATE * 1000 / requests, "layers": {
                         k: (v / total, v / RATE * 1000 / requests)
                         for k, v in sorted(samples.items(), key=lambda kv: -kv[1])}}
    return out


def top_frames(directory: str, case: str, n: int) -> list[tuple[str, int]]:
    samples: dict[str, int] = {}
    for path in glob.glob(os.path.join(directory, f"{case}.*.txt")):
        with open(path) as f:
            for k, v in parse_raw(f.read(), by_frame=True).items():
                samples[k] = samples.get(k, 0) + v
    return sorted(samples.items(), key=lambda kv: -kv[1])[:n]


def main(argv: list[str]) -> int:
    if len(argv) == 4:  # DIR CASE N: the N innermost frames with the most samples
        for frame, count in top_frames(argv[1], argv[2], int(argv[3])):
            print(f"{count:6} {frame}")
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    for name, b in breakdown(argv[1]).items():
        print(f"\n{app_report.CASES.get(name, name)}: CPU {b['cpu_ms_per_request'] * 1000:.0f} us"
              f" per request (utime+stime of gunicorn master + workers), of which Python (GIL "
              f"held) {b['python_ms_per_request'] * 1000:.0f} us ({b['samples']} samples)")
        for layer, (share, ms) in b["layers"].items():
            print(f"  {layer:50} {share:6.1%} {ms * 1000:7.0f} us/request")
        rest = b["cpu_ms_per_request"] - b["python_ms_per_request"]
        print(f"  {'without the GIL (kernel sockets, libpq)':50} {'':6} {rest * 1000:7.0f} "
              "us/request")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
