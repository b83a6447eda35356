"""CPU time of the gunicorn processes on an app host, sampled for bench/benchmark.yml.

    python3 cpu_sampler.py OUT INTERVAL SECONDS

Every INTERVAL seconds, for SECONDS seconds at most and until the file OUT.stop exists, appends
one line to OUT:
``<unix time> <kv CPU s> <minimal CPU s>``: the utime+stime of every running process serving the
app (``kvsite.wsgi`` in its command line: every instance's master and workers) and of every one
serving the minimal project (``minimal_site``). The report (bench/report.py) takes the difference
between a case's start and end (interpolated) over the requests it served: CPU per request. A
process that ends takes its CPU time with it, so a case is measured only between restarts (the
playbook restarts nothing while a case runs). Standard library only.
"""

from __future__ import annotations

import os
import sys
import time

GROUPS = (("kv", b"kvsite.wsgi"), ("minimal", b"minimal_site"))


def sample(tick: int) -> dict[str, float]:
    totals = {name: 0 for name, _ in GROUPS}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            group = next((name for name, mark in GROUPS if mark in cmdline), None)
            if group is None:
                continue
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:  # the process ended in between
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        totals[group] += int(fields[11]) + int(fields[12])  # utime, stime (stat's 14th, 15th)
    return {k: v / tick for k, v in totals.items()}


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    out, interval, seconds = argv[1], float(argv[2]), float(argv[3])
    tick = os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + seconds
    with open(out, "a") as f:
        while time.monotonic() < end and not os.path.exists(out + ".stop"):
            s = sample(tick)
            f.write(f"{time.time():.3f} {s['kv']:.2f} {s['minimal']:.2f}\n")
            f.flush()
            time.sleep(interval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
