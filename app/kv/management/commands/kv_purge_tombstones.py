"""Remove tombstones of deleted keys, but only those every node has replayed.

A tombstone keeps a deleted key's version so that a quorum read can tell "deleted" from "not
replicated yet": a node that has not replayed the delete still holds the old row, and only the
tombstone's higher version on the other nodes beats it. A node that missed the delete and the
purge (down, or cut off, and catching up later through its slot) would answer with the old value
while no node holds the tombstone any more, and a quorum read would return the deleted key.

The rule: a tombstone older than ``--older-than`` seconds is purged only when every node has
replayed WAL past the *purge point*, the primary's WAL insert position read right after the
candidates were selected (every candidate was visible then, so its commit record lies below it).
"Every node" is every name in KV_DB_NODES (asked directly: ``pg_last_wal_replay_lsn()``) and every
physical replication slot on the primary whose standby is not one of them (its walsender's
``replay_lsn``). A node that is unreachable, not a standby of this primary, or behind, or a slot
that is inactive, holds the whole purge back: nothing is deleted and the reasons are printed.
Before giving up, the run asks again for up to ``--wait`` seconds (a node that is behind or
restarting usually gets there). A slot whose WAL is lost
(``wal_status = 'lost'``) is ignored: its standby can only come back through a new base backup,
which copies the current data, so it cannot bring a purged key back.

Safe to run on several hosts at once: a run that does not get the advisory lock on the primary
does nothing, and the delete matches key, version and tombstone, so a key written again in the
meantime is kept. The delete commits with ``synchronous_commit = local``: if it is lost in a
failover the tombstones merely stay. Output: what was purged or held back and why, then a last
line ``changed N`` or ``unchanged`` (``--json``: one JSON object instead).
"""

from __future__ import annotations

import json
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections, transaction

from kv import fanout
from kv.consistency import format_lsn, parse_lsn
from kv.nodes import CLUSTER

# pg_try_advisory_lock key: "kvpurge" in ASCII
LOCK_KEY = 0x6B7670757267
CANDIDATES_SQL = """
CREATE TEMP TABLE kv_purge_candidates AS
SELECT key, version FROM kv_item
 WHERE deleted AND updated_at < now() - make_interval(secs => %s)
"""
POSITION_SQL = """
SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
       (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1)
"""
SLOTS_SQL = """
SELECT s.slot_name, s.active, s.wal_status, r.application_name, r.replay_lsn::text
  FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.slot_type = 'physical'
 ORDER BY s.slot_name
"""
DELETE_SQL = """
DELETE FROM kv_item i USING kv_purge_candidates c
 WHERE i.key = c.key AND i.version = c.version AND i.deleted
"""
POLL_SECONDS = 0.2
# Bound of one round of position queries (at least KV_READ_TIMEOUT): a busy node is not "down".
QUERY_TIMEOUT = 5.0


class Command(BaseCommand):
    help = ("Delete tombstones of deleted keys older than --older-than seconds that every node "
            "has replayed (see app/README.md, Deletes).")

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, default=86400,
                            help="only tombstones older than this many seconds (default 86400)")
        parser.add_argument("--wait", type=float, default=10.0,
                            help="seconds to keep asking nodes that have not replayed the "
                                 "purge point before holding back (default 10)")
        parser.add_argument("--json", action="store_true",
                            help="print one JSON object instead of lines")

    def handle(self, *args, **opts):
        if opts["older_than"] < 0:
            raise CommandError("--older-than must be 0 or more seconds")
        if not 0 <= opts["wait"] <= 3600:
            raise CommandError("--wait must be from 0 to 3600 seconds")
        for _attempt in range(3):  # a probe can miss the primary on a busy host: ask again
            state = CLUSTER.state(max_age=0)
            if state.primary is not None:
                break
            time.sleep(POLL_SECONDS)
        primary = state.primary
        if primary is None:
            raise CommandError("no PostgreSQL primary is reachable")
        report = {"primary": primary, "purged": 0, "held_back": 0, "purge_point": None,
                  "blockers": {}, "ignored": {}}
        conn = connections[primary]
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
            if not cur.fetchone()[0]:
                report["skipped"] = "another purge is running"
                return self._print(report, opts["json"])
            try:
                self._run(cur, primary, state.timeline, opts, report)
            finally:
                cur.execute("DROP TABLE IF EXISTS pg_temp.kv_purge_candidates")
                cur.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        self._print(report, opts["json"])

    def _run(self, cur, primary: str, timeline: int | None, opts: dict, report: dict) -> None:
        cur.execute("DROP TABLE IF EXISTS pg_temp.kv_purge_candidates")
        cur.execute(CANDIDATES_SQL, [opts["older_than"]])
        count = cur.rowcount
        # Every candidate was visible to the statement above, so its commit record was
        # inserted before this position.
        cur.execute("SELECT pg_current_wal_insert_lsn()::text")
        point = parse_lsn(cur.fetchone()[0])
        report["purge_point"] = format_lsn(point)
        if count == 0:
            return
        deadline = time.monotonic() + opts["wait"]
        while True:
            blockers, waiting = self._blockers(cur, primary, timeline, point, report)
            if not blockers:
                break
            # wait while every blocker may still reach the point (a node that accepts writes
            # without being the primary will not)
            if not waiting or time.monotonic() + POLL_SECONDS > deadline:
                report["blockers"] = blockers
                report["held_back"] = count
                return
            time.sleep(POLL_SECONDS)
        with transaction.atomic(using=primary):
            cur.execute("SET LOCAL synchronous_commit = local")
            cur.execute("SET LOCAL lock_timeout = '10s'")
            cur.execute(DELETE_SQL)
            report["purged"] = cur.rowcount

    def _blockers(self, cur, primary: str, timeline: int | None, point: int,
                  report: dict) -> tuple[dict[str, str], bool]:
        """Nodes and slots that have not replayed ``point``, with the reason; and whether all
        of them may still get there (worth waiting for)."""
        blockers: dict[str, str] = {}
        final: set[str] = set()
        names = [n.name for n in settings.KV_NODES if n.name != primary]

        def failed(name: str, exc) -> str:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            blockers[name] = f"unreachable ({text})"
            return blockers[name]

        timeout = max(settings.KV["READ_TIMEOUT"], QUERY_TIMEOUT)
        answers, _ = fanout.gather(POSITION_SQL, [], iter(names), len(names), timeout,
                                   failed) if names else ([], {})
        for name, row in answers:
            in_recovery, replay, receiver, received_tli = row
            replayed = parse_lsn(replay) if replay else None
            if not in_recovery:
                blockers[name] = "accepts writes but is not the primary: rejoin it as a standby"
                final.add(name)
            elif receiver is not None and timeline is not None and received_tli != timeline:
                blockers[name] = f"streams timeline {received_tli}, the primary is on {timeline}"
            elif replayed is None or replayed < point:
                blockers[name] = (f"behind: replayed up to {replay or 'nothing'}, the purge point "
                                  f"is {format_lsn(point)}")
        cur.execute(SLOTS_SQL)
        for slot, active, wal_status, app_name, replay in cur.fetchall():
            if wal_status == "lost":
                report["ignored"][f"slot {slot}"] = ("lost its WAL: its standby must be rebuilt "
                                                     "from a new base backup")
                continue
            if slot in names or slot == primary or app_name in names:
                continue  # that node was asked directly
            label = f"slot {slot}"
            if not active:
                blockers[label] = "inactive: its standby is down or disconnected"
            elif replay is None or parse_lsn(replay) < point:
                blockers[label] = (f"behind: {app_name or 'its standby'} replayed up to "
                                   f"{replay or 'nothing'}, the purge point is "
                                   f"{format_lsn(point)}")
        return blockers, not final

    def _print(self, report: dict, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(report, sort_keys=True))
            return
        if report.get("skipped"):
            self.stdout.write(f"skipped: {report['skipped']}")
        elif report["held_back"]:
            self.stdout.write(f"held back {report['held_back']} tombstones: not every node has "
                              f"replayed the purge point {report['purge_point']}")
            for name, why in sorted(report["blockers"].items()):
                self.stdout.write(f"  {name}: {why}")
        elif report["purged"]:
            self.stdout.write(f"purged {report['purged']} tombstones: every node has replayed "
                              f"the purge point {report['purge_point']}")
        for name, why in sorted(report["ignored"].items()):
            self.stdout.write(f"  ignored {name}: {why}")
        n = report["purged"]
        self.stdout.write(f"changed {n}" if n else "unchanged")
