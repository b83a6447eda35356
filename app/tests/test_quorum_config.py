"""k and N cross-checked against the primary's live settings: when the configuration cannot give
R + W > N, quorum reads and writes are refused (503 with the reason), /readyz is not ready and
the reason is logged; r=one, r=primary and w=one go on."""

import logging
import time

import pytest

from tests.conftest import refresh_nodes, unique
from tests.test_faults import put


@pytest.fixture
def reprobe():
    """The node states are probed again with the real configuration afterwards."""
    yield
    refresh_nodes()


def _assert_quorum_refused(client, caplog, words):
    key = unique()
    assert put(client, key, "local", "?w=one").status_code == 201
    for r in (put(client, key, "q"), client.get(f"/api/kv/{key}"),
              client.delete(f"/api/kv/{key}"), client.get("/api/kv/?prefix=" + key)):
        assert r.status_code == 503, r.content
        body = r.json()
        assert body["error"] == "quorum_unavailable" and "committed_locally" not in body, body
        assert "R + W > N" in body["detail"] and all(w in body["detail"] for w in words), body
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"] == "not_ready"
    assert all(w in ready.json()["detail"] for w in words), ready.json()
    errors = [r for r in caplog.records if r.name == "kv.nodes" and r.levelno >= logging.ERROR]
    assert errors and all(w in errors[0].getMessage() for w in words), caplog.text
    # what does not count on R + W > N still works
    assert client.get(f"/api/kv/{key}?r=primary").json()["value"] == "local"
    assert client.get(f"/api/kv/{key}?r=one").status_code in (200, 404)
    assert put(client, key, "still-local", "?w=one").status_code == 200


def test_sync_standbys_above_the_primarys_k_refuses_quorum_requests(client, caplog, reprobe,
                                                                     monkeypatch):
    """KV_SYNC_STANDBYS=2 while the primary waits for ANY 1: W would be 2 + 1 = 3, R = 1, but a
    write reaches only 2 nodes, so a read of 1 node may miss it."""
    from django.conf import settings

    caplog.set_level(logging.WARNING, logger="kv.nodes")
    monkeypatch.setitem(settings.KV, "SYNC_STANDBYS", 2)
    state = refresh_nodes()
    assert state.config_error and "KV_SYNC_STANDBYS" in state.config_error
    _assert_quorum_refused(client, caplog, ["KV_SYNC_STANDBYS", "waits for 1"])
    monkeypatch.setitem(settings.KV, "SYNC_STANDBYS", 1)  # equal to the primary's: fine
    assert refresh_nodes().config_error is None
    assert client.get("/readyz").status_code == 200


def test_a_standby_missing_from_kv_db_nodes_refuses_quorum_requests(client, caplog, reprobe,
                                                                     monkeypatch):
    """s2 acknowledges quorum writes (ANY 1 (s1, s2)) but KV_DB_NODES lists p1 and s1 only:
    N = 2, W = 2, R = 1, and a write acknowledged by s2 is on neither node a read may ask."""
    from django.conf import settings

    caplog.set_level(logging.WARNING, logger="kv.nodes")
    monkeypatch.setattr(settings, "KV_NODES", [n for n in settings.KV_NODES if n.name != "s2"])
    state = refresh_nodes()
    assert set(state.nodes) == {"p1", "s1"} and state.quorum.r == 1
    _assert_quorum_refused(client, caplog, ["s2", "KV_DB_NODES"])


def test_an_unknown_name_in_the_primarys_list_refuses_quorum_requests(client, cluster, caplog,
                                                                       reprobe):
    """The primary's live synchronous_standby_names names a standby the app does not know (not
    connected yet): as soon as it connects it can acknowledge writes no quorum read asks."""
    caplog.set_level(logging.WARNING, logger="kv.nodes")
    (original,) = cluster.sql(cluster.primary, "SHOW synchronous_standby_names")[0]
    try:
        cluster.sql(cluster.primary, "ALTER SYSTEM SET synchronous_standby_names = "
                                     "'ANY 1 (\"s1\", \"s2\", \"s9\")'")
        cluster.sql(cluster.primary, "SELECT pg_reload_conf()")
        state = refresh_nodes()
        for _ in range(50):  # the reload reaches the backends a moment later
            if state.config_error:
                break
            time.sleep(0.05)
            state = refresh_nodes()
        assert state.config_error and "s9" in state.config_error
        _assert_quorum_refused(client, caplog, ["s9", "KV_DB_NODES"])
    finally:
        cluster.sql(cluster.primary, "ALTER SYSTEM SET synchronous_standby_names = %s",
                    [original])
        cluster.sql(cluster.primary, "SELECT pg_reload_conf()")
    for _ in range(50):
        if refresh_nodes().config_error is None:
            break
        time.sleep(0.05)
    assert refresh_nodes().config_error is None
    assert client.get("/readyz").status_code == 200


def test_patronis_strict_placeholder_is_not_an_unknown_standby():
    """Patroni's strict quorum mode names a placeholder when it has no standby to name: nothing
    can acknowledge under it (quorum writes wait and answer 503), so it is no standby missing from
    KV_DB_NODES and must not refuse quorum reads; a real unknown name still does."""
    from kv.consistency import quorum_sizes
    from kv.nodestate import NodeStatus
    from kv.quorum_config import quorum_config_error

    nodes = {n: NodeStatus(name=n, address="127.0.0.1:1") for n in ("p", "s1", "s2")}
    q = quorum_sizes(3, 1)
    assert quorum_config_error(
        q, "p", 'ANY 1 ("__patroni_strict_sync_replica_placeholder__")', [], nodes) is None
    assert quorum_config_error(q, "p", "ANY 1 (s1, s2)", [], nodes) is None
    assert "s9" in quorum_config_error(q, "p", "ANY 1 (s1, s9)", [], nodes)
