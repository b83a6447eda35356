"""Reads that the standbys can serve while the primary is frozen and writes to it are cancelled
and then abandoned, with the node states refreshed as in production (no state held)."""

import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import refresh_nodes, unique
from tests.test_faults import put
from tests.test_write_path import _close_connections, _timed_put, frozen


def test_reads_go_on_while_writes_to_a_frozen_primary_are_abandoned(client, cluster, restore):
    from django.conf import settings
    from kv import fanout, watchdog

    timeout = settings.KV["WRITE_TIMEOUT"]
    key = unique()
    assert put(client, key, "before").status_code == 201
    cluster.wait_replayed()
    refresh_nodes()
    writers = ThreadPoolExecutor(3, thread_name_prefix="writer")
    reads = []  # (seconds since the freeze, level, seconds, status)
    hold = timeout + watchdog.MARGIN + 3
    try:
        for f in [writers.submit(_timed_put, key, "warm") for _ in range(3)]:
            assert f.result(timeout=30)[0] == 200
        with frozen(cluster.primary, at_most=hold + 8):
            frozen_at = time.monotonic()
            futs = [writers.submit(_timed_put, key, f"frozen-{i}") for i in range(3)]
            while time.monotonic() - frozen_at < hold:
                for level in ("one", "quorum"):
                    t = time.monotonic()
                    g = client.get(f"/api/kv/{key}?r={level}")
                    reads.append((round(t - frozen_at, 3), level,
                                  round(time.monotonic() - t, 3), g.status_code))
            answered = [f.done() for f in futs]
    finally:
        for f in [writers.submit(_close_connections) for _ in range(3)]:
            f.result(timeout=60)
        writers.shutdown(wait=False)
    assert all(answered), answered
    cap = settings.KV["READ_TIMEOUT"] * fanout.HEDGE_FRACTION
    slow = [r for r in reads if r[2] > cap + 0.5]
    assert not slow, (slow, len(reads))
    assert all(r[3] == 200 for r in reads), [r for r in reads if r[3] != 200]


def test_a_read_after_an_idle_spell_does_not_wait_for_a_frozen_primary(client, cluster,
                                                                        restore):
    """A worker that got no request for longer than the states may be served stale (the TTL +
    2 x KV_READ_TIMEOUT: a worker whose threads all wait, or whose balancer sends to another
    one) must still not probe the frozen primary in the request: its states were kept fresh
    meanwhile, so the read goes to the standbys at once."""
    from django.conf import settings
    from kv import fanout

    key = unique()
    assert put(client, key, "idle").status_code == 201
    cluster.wait_replayed()
    refresh_nodes()
    idle = settings.KV["NODE_CACHE_TTL"] + 2 * settings.KV["READ_TIMEOUT"] + 0.5
    cap = settings.KV["READ_TIMEOUT"] * fanout.HEDGE_FRACTION
    with frozen(cluster.primary, at_most=idle + 20):
        time.sleep(idle)
        t = time.monotonic()
        g = client.get(f"/api/kv/{key}?r=one")
        elapsed = time.monotonic() - t
    assert g.status_code == 200 and g.json()["value"] == "idle", g.content
    assert elapsed < cap, elapsed


def test_a_silent_probe_puts_its_node_last_before_it_times_out(cluster, restore):
    """While the refresh thread's probe waits out KV_READ_TIMEOUT on a hung node, the node
    already goes last in the read order once the hedge delay has passed."""
    from django.conf import settings
    from kv import fanout, selection
    from kv.nodes import CLUSTER

    from tests.test_fanout import _cluster_pids, stopped

    refresh_nodes()
    ttl = settings.KV["NODE_CACHE_TTL"]
    hedge = settings.KV["READ_TIMEOUT"] * fanout.HEDGE_FRACTION
    assert ttl + hedge + 0.3 < settings.KV["READ_TIMEOUT"]
    with stopped(_cluster_pids(cluster.node("s1"))):
        frozen_at = time.monotonic()
        CLUSTER.state()  # starts the refresh thread if this process has none yet
        time.sleep(ttl + hedge + 0.3)
        suspect = "s1" in CLUSTER._failed
        order = selection.order(["p1", "s1", "s2"])
        waited = time.monotonic() - frozen_at
    assert waited < settings.KV["READ_TIMEOUT"], waited
    assert suspect and order[-1] == "s1", (CLUSTER._failed, order)


def test_a_token_lookup_asks_a_silent_primary_last(client, cluster, restore):
    """The token lookup asks the primary first, unless the primary was found silent since the
    last probe started: then the standbys first, so the lookup does not wait for the hedge."""
    from django.conf import settings
    from kv import auth, fanout

    key = unique()
    assert put(client, key, "tok").status_code == 201
    cluster.wait_replayed()
    refresh_nodes()
    ttl = settings.KV["NODE_CACHE_TTL"]
    hedge = settings.KV["READ_TIMEOUT"] * fanout.HEDGE_FRACTION
    with frozen(cluster.primary, at_most=30):
        time.sleep(ttl + hedge + 0.3)  # the refresh thread's probe of p1 is silent by now
        auth.clear_cache()
        t = time.monotonic()
        g = client.get(f"/api/kv/{key}?r=one")
        elapsed = time.monotonic() - t
    assert g.status_code == 200 and g.json()["value"] == "tok", g.content
    assert elapsed < hedge, elapsed
