"""Failover (marked ``changes_cluster``, so it runs last: it changes the session's cluster for
good).

p1 is stopped (fenced), s1 promoted, s2 re-pointed to s1. The app needs no configuration change:
it finds s1 as primary on the new timeline, versions keep increasing across the failover, and
when the old primary comes back unfenced on its abandoned timeline it never serves a read.
"""

import json
import time

import pytest
from kv.consistency import split_version

from tests.conftest import refresh_nodes, unique
from tests.pgcluster import PG_BIN, REPL_PASSWORD, _q, _run

pytestmark = pytest.mark.changes_cluster


def put(client, key, value):
    return client.put(f"/api/kv/{key}", json.dumps({"value": value}),
                      content_type="application/json")


def test_failover_to_a_standby(client, cluster):
    key = unique("fo")
    before = put(client, key, "before")
    assert before.status_code == 201
    v1 = int(before.json()["version"])
    assert split_version(v1)[0] == 1

    p1, s1, s2 = cluster.node("p1"), cluster.node("s1"), cluster.node("s2")
    cluster.stop(p1)  # fence the old primary
    _run([str(PG_BIN / "pg_ctl"), "-D", s1.datadir, "-w", "-t", "60", "promote"])
    cluster.sql(s1, "SELECT pg_create_physical_replication_slot('s2')")
    cluster.sql(s1, "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (\"s2\", \"p1\")'")
    cluster.sql(s1, "SELECT pg_reload_conf()")
    conninfo = (f"host=127.0.0.1 port={s1.port} user=replicator "
                f"password='{_q(REPL_PASSWORD)}' application_name=s2")
    cluster.sql(s2, "ALTER SYSTEM SET primary_conninfo = %s", [conninfo])
    cluster.sql(s2, "SELECT pg_reload_conf()")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = refresh_nodes()
        if state.primary == "s1" and state.write_quorum_ok() and state.nodes["s2"].eligible:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(refresh_nodes().public())
    assert state.timeline == 2

    # the quorum write made before the failover survived it
    g = client.get(f"/api/kv/{key}")
    assert g.status_code == 200 and g.json()["value"] == "before"

    after = put(client, key, "after")
    assert after.status_code == 200, after.content
    v2 = int(after.json()["version"])
    assert v2 > v1
    assert split_version(v2)[0] == 2

    # the old primary comes back unfenced, on its abandoned timeline, with a divergent write
    cluster.start(p1)
    cluster.sql(p1, "SET synchronous_commit = local; UPDATE kv_item SET value = '\"zombie\"', "
                    "version = version + 1000000 WHERE key = %s", [key])
    state = refresh_nodes()
    assert state.primary == "s1"
    assert state.nodes["p1"].role == "stale_primary"
    assert not state.nodes["p1"].eligible
    body = client.get("/api/cluster").json()
    assert body["nodes"]["p1"]["role"] == "stale_primary"
    for q in ("", "?r=one", "?r=primary", "?r=one&max_lag=3600"):
        for _ in range(10):
            g = client.get(f"/api/kv/{key}{q}")
            assert g.status_code == 200, g.content
            assert g.json()["value"] == "after", q
            assert g["X-KV-Node"] != "p1"
    cluster.stop(p1)
