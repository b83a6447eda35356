"""Read timing on the primary vs a replica, honest about what it measures.

For every node (or --node), one connection from this host runs --count sequential single-row
primary-key SELECTs of one key on kv_item, after --warmup unmeasured ones, and prints the
mean, p50, p99 and max latency of each.

What this is: the round trip of one query over one warm connection, as seen from this host,
including Django's ORM, psycopg2 and the network. What it is not: throughput, behaviour under
concurrency, or the cost of consistency levels (use bench.sh for that); on a quiet loopback
cluster the differences between nodes are mostly noise.
"""

from __future__ import annotations

import json
import statistics
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kv.models import KVItem
from kv.nodes import CLUSTER


class Command(BaseCommand):
    help = "Time single-row primary-key reads on each node (sequential, one connection)."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=1000)
        parser.add_argument("--warmup", type=int, default=50)
        parser.add_argument("--key", default="benchmark-db-key")
        parser.add_argument("--node", action="append", help="only this node (repeatable)")
        parser.add_argument("--json", action="store_true", help="one JSON object per node")

    def handle(self, *args, **opts):
        count = opts["count"]
        if not 1 <= count <= 1_000_000:
            raise CommandError("--count must be 1 to 1000000")
        state = CLUSTER.state(max_age=0)
        names = opts["node"] or [n.name for n in settings.KV_NODES]
        unknown = set(names) - set(state.nodes)
        if unknown:
            raise CommandError(f"unknown node(s): {', '.join(sorted(unknown))}")
        if not opts["json"]:
            self.stdout.write(f"{count} sequential PK reads of {opts['key']!r} per node, one "
                              "connection each (latency of one query, not throughput)")
        for name in names:
            node = state.nodes[name]
            if not node.reachable:
                self.stdout.write(json.dumps({"node": name, "error": node.error}) if opts["json"]
                                  else f"{name:10} unreachable: {node.error}")
                continue
            qs = KVItem.objects.using(name).filter(pk=opts["key"])
            for _ in range(opts["warmup"]):
                list(qs.values_list("version"))
            samples = []
            for _ in range(count):
                started = time.perf_counter()
                list(qs.values_list("version"))
                samples.append((time.perf_counter() - started) * 1000)
            samples.sort()
            row = {
                "node": name, "role": node.role, "count": count,
                "mean_ms": round(statistics.fmean(samples), 3),
                "p50_ms": round(samples[len(samples) // 2], 3),
                "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
                "max_ms": round(samples[-1], 3),
            }
            if opts["json"]:
                self.stdout.write(json.dumps(row))
            else:
                self.stdout.write(f"{name:10} {node.role:14} mean {row['mean_ms']:7.3f} ms  "
                                  f"p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms  "
                                  f"max {row['max_ms']:7.3f} ms")
