"""Backups and point-in-time recovery on the lab (pgBackRest, repository on backup1).

The restore drill, end to end: keys written through the app, a full backup (taken from a
standby), a switchover (the new primary must archive, with no gap in the WAL chain), more keys, a
recorded time, then a key deleted, another overwritten and a new one written. `playbooks/
restore.yml` restores the repository to that time on backup1 as a new, separate cluster: every key
written before the time is there with its value, the deleted key too, the overwritten key has its
old value, and the key written after the time is not. Restoring to that time replays the WAL
across the switchover's timeline change, so a gap in the archive would fail it.

A repository with a WAL segment missing, or one tampered with, must make the restore fail loudly
(the playbook fails and no restored cluster is left running), never restore to an earlier state
quietly. Those runs work on a copy of the repository (the real one is never touched).

A differential backup taken while the stack's workload runs must not fail a single request.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from . import harness

pytestmark = [pytest.mark.lab]

BACKUP = "backup1"
STANZA = "kv"
REPO = "/var/lib/pgbackrest"
RESTORE_ROOT = "/var/lib/pgbackrest-restore"
PSQL = "/usr/lib/postgresql/15/bin/psql"


def pgbackrest(*args: str, timeout: float = 600, check: bool = True):
    return harness.dexec(BACKUP, "runuser", "-u", "pgbackrest", "--", "pgbackrest",
                         f"--stanza={STANZA}", *args, timeout=timeout, check=check)


def backups() -> list[dict]:
    info = json.loads(pgbackrest("info", "--output=json", timeout=60).stdout)
    return info[0]["backup"]


def restored(cluster: str, sql: str) -> str:
    """A query on the restored cluster (socket only, as the repository's owner)."""
    return harness.dexec(BACKUP, "runuser", "-u", "pgbackrest", "--", PSQL, "-XAtq",
                         "-h", f"{RESTORE_ROOT}/{cluster}/run", "-p", "5499", "-U", "postgres",
                         "-d", "kv", "-c", sql, timeout=60).stdout.strip()


def restore(cluster: str, *extra: str, check: bool = True):
    args = ["-e", f"restore_cluster={cluster}", *extra]
    if check:
        return harness.playbook("restore.yml", timeout=900, extra=args)
    binary = harness.PY_BIN / "ansible-playbook"
    return harness.run(["env", "ANSIBLE_FORCE_COLOR=0",
                        f"ANSIBLE_CONFIG={harness.ROOT / 'ansible.cfg'}",
                        str(binary if binary.exists() else "ansible-playbook"),
                        "-i", str(harness.INVENTORY),
                        "--vault-password-file", str(harness.VAULT_PASSWORD),
                        str(harness.ROOT / "playbooks" / "restore.yml"), *args],
                       timeout=900, check=False)


def remove(cluster: str) -> None:
    restore(cluster, "-e", "restore_state=absent")


def put(s, key: str, value: str) -> None:
    r = s.put(f"{s.kv_base}/api/kv/{key}", params={"w": "quorum"}, json={"value": value},
              timeout=30)
    assert r.status_code in (200, 201), f"PUT {key}: {r.status_code} {r.text[:200]}"


def delete(s, key: str) -> None:
    r = s.delete(f"{s.kv_base}/api/kv/{key}", params={"w": "quorum"}, timeout=30)
    assert r.status_code == 204, f"DELETE {key}: {r.status_code} {r.text[:200]}"


def session(lab: harness.Lab):
    s = lab.session()
    s.kv_base = lab.base
    return s


def primary_now(lab: harness.Lab) -> str:
    """The primary's clock as a timestamp PostgreSQL parses back exactly."""
    sql = ("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
           " || '+00'")
    return harness.dexec(lab.primary(), "runuser", "-u", "postgres", "--", "psql", "-XAtq",
                         "-d", "postgres", "-c", sql, timeout=20).stdout.strip()


def archive_everything() -> None:
    """`pgbackrest check`: switches the primary's WAL and waits until that segment is archived
    (it fails when the primary does not archive into the repository)."""
    pgbackrest("check", timeout=180)


def segment_number(name: str) -> int:
    """A WAL segment file name's position in the WAL (timeline left out)."""
    return int(name[8:24], 16)


def test_restore_drill_to_a_time(lab: harness.Lab):
    prefix = f"drill-{int(time.time())}"
    s = session(lab)
    before = {f"{prefix}-a{i}": f"a{i}" for i in range(5)}
    for k, v in before.items():
        put(s, k, v)
    put(s, f"{prefix}-deleted", "kept-by-the-restore")
    put(s, f"{prefix}-overwritten", "old")

    pgbackrest("--type=full", "backup", timeout=900)
    full = backups()[-1]
    assert full["type"] == "full" and not full.get("error"), full

    # a switchover between the backup and the target: the restore must replay across it
    old_primary = lab.primary()
    target = lab.standbys()[0]
    harness.playbook("switchover.yml", timeout=600, extra=["-e", f"switchover_to={target}"])
    lab.wait_healthy(timeout=180, why="after the drill's switchover")
    assert lab.primary() != old_primary
    archive_everything()  # the new primary archives into the same repository

    after_backup = {f"{prefix}-b{i}": f"b{i}" for i in range(5)}
    for k, v in after_backup.items():
        put(s, k, v)
    time.sleep(1)
    target_time = primary_now(lab)
    time.sleep(1)
    delete(s, f"{prefix}-deleted")
    put(s, f"{prefix}-overwritten", "new")
    put(s, f"{prefix}-later", "after-the-target")
    archive_everything()

    cluster = "drill"
    remove(cluster)
    started = time.monotonic()
    try:
        restore(cluster, "-e", json.dumps({"restore_time": target_time}))
        took = time.monotonic() - started
        rows = restored(cluster, f"SELECT key, value #>> '{{}}', deleted FROM kv_item "
                                 f"WHERE key LIKE '{prefix}-%' ORDER BY key")
        got = {k: (v, d) for k, v, d in (line.split("|") for line in rows.splitlines())}
        for k, v in {**before, **after_backup}.items():
            assert got.get(k) == (v, "f"), f"{k}: {got.get(k)} in the restore, wrote {v}"
        assert got.get(f"{prefix}-deleted") == ("kept-by-the-restore", "f"), got
        assert got.get(f"{prefix}-overwritten") == ("old", "f"), got
        assert f"{prefix}-later" not in got, got
        # the running cluster was not touched: it still has the later state
        live = lab.session().get(f"{lab.base}/api/kv/{prefix}-overwritten",
                                 params={"r": "primary"}, timeout=10)
        assert live.status_code == 200 and live.json()["value"] == "new", live.text
        harness.RESULTS.mkdir(parents=True, exist_ok=True)
        (harness.RESULTS / "restore-drill.json").write_text(json.dumps(
            {"target_time": target_time, "restore_seconds": round(took, 1),
             "full_backup": full["label"]}))
        print(f"restore drill: restore.yml to {target_time} took {took:.1f} s")
    finally:
        remove(cluster)


@pytest.mark.parametrize("damage", ["missing", "tampered"])
def test_broken_wal_fails_the_restore_loudly(lab: harness.Lab, damage: str):
    s = session(lab)
    key = f"broken-{damage}-{int(time.time())}"
    latest = backups()[-1]
    stop_segment = latest["archive"]["stop"]
    put(s, key, "needs-the-wal-after-the-backup")
    target_time = primary_now(lab)
    archive_everything()

    copy = f"{RESTORE_ROOT}/repository-copy-{damage}"  # the repository owner's directory
    harm = ('rm -f "$f"' if damage == "missing" else
            'dd if=/dev/urandom of="$f" bs=64 count=4 seek=2 conv=notrunc status=none')
    cluster = f"broken-{damage}"
    script = f"""set -eu
rm -rf {copy}
cp -a {REPO} {copy}
n=0
for f in $(find {copy}/archive/{STANZA} -type f -regextype posix-extended \\
             -regex '.*/[0-9A-F]{{24}}-[0-9a-f]{{40}}[.a-z0-9]*'); do
  seg=$(basename "$f" | cut -c9-24)
  if [ "$((16#$seg))" -gt "$((16#{stop_segment[8:24]}))" ]; then
    {harm}
    n=$((n+1))
  fi
done
echo "$n"
"""
    try:
        harness.dexec(BACKUP, "install", "-d", "-o", "pgbackrest", "-g", "pgbackrest", "-m",
                      "0750", RESTORE_ROOT, timeout=30)
        touched = int(harness.dexec(BACKUP, "runuser", "-u", "pgbackrest", "--", "bash", "-c",
                                    script, timeout=120).stdout.strip() or 0)
        assert touched > 0, f"no WAL segment after the backup's stop {stop_segment} to damage"
        remove(cluster)
        p = restore(cluster, "-e", json.dumps({"restore_time": target_time}), "-e",
                    f"restore_repo_path={copy}", check=False)
        out = p.stdout + p.stderr
        assert p.returncode != 0, f"a restore with {damage} WAL succeeded:\n{out[-3000:]}"
        assert "stopped during recovery" in out, out[-3000:]
        assert "recovery ended before configured recovery target was reached" in out, out[-3000:]
        active = harness.dexec(BACKUP, "systemctl", "is-active", f"kv-restore-{cluster}",
                               check=False).stdout.strip()
        assert active != "active", "a half-restored cluster was left running"
    finally:
        remove(cluster)
        harness.dexec(BACKUP, "rm", "-rf", copy, timeout=120)


def test_backup_under_load_fails_no_request(lab: harness.Lab):
    wl = harness.Workload(clients=4, rate=60.0, write_levels=(("quorum", 1.0),),
                          read_levels=(("quorum", 0.5), ("primary", 0.3), ("one", 0.2)))
    rec = harness.Recorder(lab=lab, prefix=f"backup-load-{int(time.time())}", wl=wl)
    stop = threading.Event()
    deadline = time.monotonic() + 600
    threads = [threading.Thread(target=rec.client, args=(i, deadline, stop), daemon=True)
               for i in range(wl.clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        pgbackrest("--type=diff", "backup", timeout=900)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert backups()[-1]["type"] == "diff"
    assert len(rec.history) > 50, f"the workload ran only {len(rec.history)} operations"
    bad = [op for op in rec.history if op["outcome"] != "ok"]
    assert bad == [], (f"{len(bad)} of {len(rec.history)} requests failed during the backup: "
                       f"{bad[:5]}")
