"""Session fixtures: a real primary + two streaming standbys (ANY 1), Django on top of them.

The cluster must exist before Django reads its settings (the node list comes from the
environment), so it is started in pytest_configure and stopped in pytest_unconfigure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time

import pytest

from tests.pgcluster import PgCluster

TOKENS = {
    "rw": ("test-rw", "rw-" + secrets.token_urlsafe(24), "read,write"),
    "ro": ("test-ro", "ro-" + secrets.token_urlsafe(24), "read"),
    "wo": ("test-wo", "wo-" + secrets.token_urlsafe(24), "write"),
}
_cluster: PgCluster | None = None

TEST_ENV = {
    "DJANGO_SETTINGS_MODULE": "kvsite.settings",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
    "KV_INSTANCE": "testhost:8000",
    "KV_WRITE_TIMEOUT": "1.5",
    "KV_READ_TIMEOUT": "1.5",
    "KV_NODE_CACHE_TTL": "0.3",
    "KV_TOKEN_CACHE_TTL": "0.3",
    "KV_MAX_VALUE_BYTES": "65536",
    "KV_LOG_LEVEL": "WARNING",
    # test traffic stays on loopback, whatever proxy the environment names
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "changes_cluster: changes the session's cluster for good (a failover); runs "
        "after every other test")
    global _cluster
    _cluster = PgCluster.create()
    os.environ.update(_cluster.env())
    os.environ.update(TEST_ENV)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", database="default", verbosity=0)
    with open(os.devnull, "w") as devnull:
        for name, token, scopes in TOKENS.values():
            call_command("kv_token", "create", "--name", name, "--token", token,
                         "--scopes", scopes, stdout=devnull)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``changes_cluster`` run last, whatever their file's name (a stable sort:
    the order of the others is kept)."""
    items.sort(key=lambda item: item.get_closest_marker("changes_cluster") is not None)


def pytest_unconfigure(config):
    if _cluster is not None:
        _cluster.destroy()


@pytest.fixture(scope="session")
def cluster() -> PgCluster:
    assert _cluster is not None
    return _cluster


def make_client(kind: str | None = "rw"):
    from django.test import Client

    headers = {"Authorization": f"Bearer {TOKENS[kind][1]}"} if kind else {}
    return Client(headers=headers)


@pytest.fixture
def client():
    return make_client("rw")


def refresh_nodes():
    from kv.nodes import CLUSTER

    CLUSTER.invalidate()
    return CLUSTER.state(max_age=0)


@pytest.fixture
def restore(cluster):
    """Undo what a fault test did: every node running, replay resumed, both streaming."""
    yield cluster
    from django.db import connections

    connections.close_all()  # the test client never closes this thread's broken connections
    for node in cluster.nodes:
        if not cluster.is_running(node):
            cluster.start(node)
    for node in cluster.nodes[1:]:
        with contextlib.suppress(Exception):
            cluster.sql(node, "SELECT pg_wal_replay_resume()")
    cluster.wait_streaming(len(cluster.nodes) - 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = refresh_nodes()
        if state.write_quorum_ok() and len(state.eligible()) == len(cluster.nodes):
            return
        time.sleep(0.1)


def unique(prefix: str = "k") -> str:
    return f"{prefix}-{secrets.token_hex(6)}"
