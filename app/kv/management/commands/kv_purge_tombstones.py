"""Remove tombstones of deleted keys older than --older-than seconds (default one day).

A tombstone keeps a deleted key's version so that a quorum read can tell "deleted" from "not
replicated yet". Once every node has replayed the delete it can go: keep --older-than well above
any replica lag you tolerate. Prints ``changed N`` or ``unchanged``.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from kv.nodes import CLUSTER


class Command(BaseCommand):
    help = "Delete tombstones of deleted keys older than --older-than seconds."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, default=86400)

    def handle(self, *args, **opts):
        if opts["older_than"] < 60:
            raise CommandError("--older-than must be at least 60 seconds")
        primary = CLUSTER.state(max_age=0).primary
        if primary is None:
            raise CommandError("no PostgreSQL primary is reachable")
        with connections[primary].cursor() as cur:
            cur.execute("DELETE FROM kv_item WHERE deleted AND "
                        "updated_at < now() - make_interval(secs => %s)", [opts["older_than"]])
            n = cur.rowcount
        self.stdout.write(f"changed {n}" if n else "unchanged")
