"""After side_effect.yml: the killed primary was failed over and has rejoined as a standby."""

import json
import os
import time

import pytest
import testinfra

NODES = ["postgres_failover-pg1", "postgres_failover-pg2", "postgres_failover-pg3"]
OLD_PRIMARY = NODES[0]

testinfra_hosts = [NODES[1]]  # the checks reach every node themselves


@pytest.fixture(scope="module")
def outcome():
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "failover.json")
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    print(
        f"RTO (kill -> first quorum write on the new primary): {data['rto_seconds']} s; "
        f"new primary {data['new_primary']}; "
        f"{len(data['acked'])} rows acknowledged before the crash"
    )
    return data


def node(name):
    return testinfra.get_host(f"docker://{name}")


def psql(host, sql, db="kv"):
    cmd = host.run(
        "runuser -u postgres -- psql -X -q -A -t -F '|' -v ON_ERROR_STOP=1 -d %s -c %s", db, sql
    )
    assert cmd.rc == 0, cmd.stderr
    return [line.split("|") for line in cmd.stdout.splitlines() if line]


def test_new_primary_is_a_former_standby(outcome):
    assert outcome["new_primary"] in NODES[1:]
    primary = node(outcome["new_primary"])
    assert psql(primary, "SELECT pg_is_in_recovery()") == [["f"]]
    tli = psql(primary, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")[0][0]
    assert int(tli, 16) == 2


def test_every_acknowledged_row_survived(outcome):
    acked = set(outcome["acked"])
    assert len(acked) >= 100
    primary = node(outcome["new_primary"])
    present = {int(r[0]) for r in psql(primary, "SELECT id FROM acked")}
    missing = sorted(acked - present)
    assert not missing, f"acknowledged but lost: {missing[:20]}"
    assert 100000 in present  # written on the new primary after the failover


def test_new_primary_accepts_quorum_writes(outcome):
    primary = node(outcome["new_primary"])
    token = 200000 + int(time.time()) % 100000
    psql(
        primary,
        "BEGIN; SET LOCAL synchronous_commit = remote_apply; "
        f"INSERT INTO acked VALUES ({token}); COMMIT;",
    )
    assert psql(primary, f"SELECT count(*) FROM acked WHERE id = {token}") == [["1"]]


def test_both_other_nodes_follow_the_new_primary_with_quorum(outcome):
    primary = node(outcome["new_primary"])
    followers = sorted(set(NODES) - {outcome["new_primary"]})
    rows = psql(
        primary,
        "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY 1",
        db="postgres",
    )
    assert rows == [[name, "streaming", "quorum"] for name in followers]
    names = psql(primary, "SHOW synchronous_standby_names", db="postgres")[0][0]
    assert names == "ANY 1 (" + ", ".join(f'"{n}"' for n in followers) + ")"
    slots = psql(
        primary, "SELECT slot_name, active FROM pg_replication_slots ORDER BY 1", db="postgres"
    )
    assert slots == [[n.replace("-", "_"), "t"] for n in followers]


def test_old_primary_is_a_standby_with_every_acknowledged_row(outcome):
    old = node(OLD_PRIMARY)
    assert psql(old, "SELECT pg_is_in_recovery()") == [["t"]]
    assert old.service("postgresql@15-main").is_running
    assert old.file("/etc/postgresql/15/main/start.conf").contains("^auto")
    acked = set(outcome["acked"])
    for name in NODES:
        if name == outcome["new_primary"]:
            continue
        for _ in range(30):
            present = {int(r[0]) for r in psql(node(name), "SELECT id FROM acked")}
            if acked <= present and 100000 in present:
                break
            time.sleep(1)
        assert acked <= present, f"{name} misses {sorted(acked - present)[:20]}"
    # No replication slot left behind on the rewound former primary.
    assert psql(old, "SELECT count(*) FROM pg_replication_slots", db="postgres") == [["0"]]
