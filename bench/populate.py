#!/usr/bin/python3
"""Create the benchmark's keys (stdlib only; runs on the client host).

    populate.py BASE_URL KEY_PREFIX COUNT   (token in the environment: KV_BENCH_TOKEN)
"""

import json
import os
import ssl
import sys
import urllib.request


def main() -> int:
    base, prefix, count = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the lab's self-signed certificate
    headers = {"Authorization": f"Bearer {os.environ['KV_BENCH_TOKEN']}",
               "Content-Type": "application/json"}
    for i in range(count):
        body = json.dumps({"value": {"bench": i}}).encode()
        req = urllib.request.Request(f"{base}/api/kv/{prefix}{i}", data=body, method="PUT",
                                     headers=headers)
        with urllib.request.urlopen(req, context=ctx, timeout=15) as resp:
            if resp.status not in (200, 201):
                print(f"PUT {prefix}{i}: {resp.status}", file=sys.stderr)
                return 1
    print(f"{count} keys under {prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
