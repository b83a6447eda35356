r"""Python CPU time per request, in-process, on an app host (no network, no wrk, no balancer).

Runs the deployed release's code with the instance's environment (/etc/kv/env) through Django's
test client against the live cluster: GET at each read level, then the read functions alone
(``fetch_row`` on the primary is the bare view's lookup), in alternating rounds (so that the
machine's load hits all alike). Writes one key, ``cpu-probe``. Reports ``time.process_time``
per call: the work of this process only.

    TOKEN=$(make -s lab-token | sed -n 's/.*token: "\(kvlab-w-[^"]*\)".*/\1/p')
    docker exec -i -w /opt/kv/current/app kvlab-app1 /opt/kv/current/venv/bin/python - "$TOKEN" \
        < bench/cpu_per_request.py
"""

import os
import re
import sys
import time

ROUNDS = 2
COUNT = 2000
WARMUP = 300


def main() -> int:
    with open("/etc/kv/env") as env:
        for line in env:
            m = re.match(r'^([A-Z_]+)="(.*)"$', line.rstrip("\n"))
            if m:
                os.environ.setdefault(m[1], re.sub(r"\\(.)", r"\1", m[2]))
    os.environ.update({"KV_ACCESS_LOG": "false",
                       "KV_LOG_LEVEL": "WARNING", "PROMETHEUS_MULTIPROC_DIR": "/tmp/kv-cpu-probe",
                       "DJANGO_SETTINGS_MODULE": "kvsite.settings"})
    os.makedirs("/tmp/kv-cpu-probe", exist_ok=True)
    sys.path.insert(0, ".")
    import django

    django.setup()
    from django.test import Client
    from kv import reads
    from kv.nodes import CLUSTER

    client = Client(HTTP_AUTHORIZATION=f"Bearer {sys.argv[1]}",
                    HTTP_HOST=os.environ.get("KV_BIND_ADDRESS", "localhost"))
    r = client.put("/api/kv/cpu-probe", '{"value": {"a": 1, "b": "text"}}',
                   content_type="application/json")
    if r.status_code not in (200, 201):
        print(f"PUT cpu-probe: {r.status_code} {r.content[:200]!r}", file=sys.stderr)
        return 1
    requests = {f"GET {name}": (lambda p=path: client.get(p)) for name, path in [
        ("r=one", "/api/kv/cpu-probe?r=one"),
        ("r=primary", "/api/kv/cpu-probe?r=primary"), ("r=quorum", "/api/kv/cpu-probe?r=quorum")]}
    primary = CLUSTER.state().primary
    functions = {
        "fetch_row (primary)": lambda: reads.fetch_row(primary, "cpu-probe"),
        "read_one": lambda: reads.read("cpu-probe", "one", 5.0),
        "read_primary": lambda: reads.read("cpu-probe", "primary", 5.0),
        "read_quorum": lambda: reads.read("cpu-probe", "quorum", 5.0),
    }
    for group, unit, scale in ((requests, "ms", 1e3), (functions, "us", 1e6)):
        for _ in range(ROUNDS):
            out = []
            for name, fn in group.items():
                for _ in range(WARMUP):
                    fn()
                started = time.process_time()
                for _ in range(COUNT):
                    fn()
                out.append(f"{name} {(time.process_time() - started) / COUNT * scale:.2f} {unit}")
            print(" | ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
