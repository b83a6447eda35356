#!/usr/bin/env python3
"""TCP-connect every port of every host and print one JSON object per line:
{"host", "port", "state"} with state open, refused or filtered (no answer within the timeout).
Run it from a machine that is NOT in the inventory (README "Security"): only the balancer's
80/443 should be open. Standard library only, so it runs in a bare container:

  python3 scripts/portscan.py --hosts 10.0.0.10,10.0.0.21 --ports 22,80,443,5432
  docker run --rm -i --network kvlab --ip 172.30.99.250 kvlab/debian:bookworm \\
      python3 - --hosts ... --ports ... < scripts/portscan.py
"""

import argparse
import errno
import json
import socket
from concurrent.futures import ThreadPoolExecutor


def probe(host: str, port: int, timeout: float) -> dict:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        code = s.connect_ex((host, port))
    if code == 0:
        state = "open"
    elif code == errno.ECONNREFUSED:
        state = "refused"
    else:
        state = "filtered"
    return {"host": host, "port": port, "state": state}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", required=True, help="comma-separated addresses")
    ap.add_argument("--ports", required=True, help="comma-separated TCP ports")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per connection")
    args = ap.parse_args()
    targets = [(h, int(p)) for h in args.hosts.split(",") if h
               for p in args.ports.split(",") if p]
    with ThreadPoolExecutor(max_workers=min(64, len(targets) or 1)) as pool:
        for result in pool.map(lambda t: probe(*t, args.timeout), targets):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
