"""Listing by prefix with opaque cursors, checked with property-based tests (hypothesis)."""

import json
import secrets
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_client

# Printable text, including LIKE's wildcards and non-ASCII, never control characters.
key_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), max_codepoint=0x2FFF) |
    st.sampled_from("%_\\/ ab"),
    min_size=1, max_size=12,
)


def list_all(client, prefix, limit, level="quorum"):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"prefix": prefix, "limit": str(limit), "r": level}
        if cursor:
            params["cursor"] = cursor
        r = client.get("/api/kv/", params)
        assert r.status_code == 200, r.content
        body = r.json()
        assert len(body["items"]) <= limit
        seen.extend(body["items"])
        pages += 1
        assert pages < 500
        cursor = body["next"]
        if cursor is None:
            return seen


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(keys=st.sets(key_text, min_size=0, max_size=15),
       deleted=st.sets(st.integers(0, 14), max_size=5),
       limit=st.integers(1, 7),
       sub=st.integers(0, 3))
def test_pagination_returns_each_live_key_once_in_order(keys, deleted, limit, sub):
    client = make_client("rw")
    ns = f"pg{secrets.token_hex(4)}/"
    keys = sorted(keys)
    for k in keys:
        r = client.put(f"/api/kv/{quote(ns + k)}", json.dumps({"value": k}),
                       content_type="application/json")
        assert r.status_code == 201, (k, r.content)
    gone = {keys[i] for i in deleted if i < len(keys)}
    for k in gone:
        assert client.delete(f"/api/kv/{quote(ns + k)}").status_code == 204
    live = [k for k in keys if k not in gone]
    # a sub-prefix taken from one of the keys (exercises %, _ and \\ in LIKE)
    prefix = ns + (live[0][:sub] if live and sub else "")
    expected = [ns + k for k in live if (ns + k).startswith(prefix)]
    # quorum writes, so a quorum listing (R nodes merged) and the primary see all of them
    for level in ("quorum", "primary"):
        items = list_all(client, prefix, limit, level)
        assert [i["key"] for i in items] == expected, level
        assert all(i["value"] == i["key"][len(ns):] for i in items)


def test_limit_and_next_shape():
    client = make_client("rw")
    ns = f"shape{secrets.token_hex(4)}/"
    for i in range(5):
        client.put(f"/api/kv/{ns}{i}", json.dumps({"value": i}), content_type="application/json")
    r = client.get("/api/kv/", {"prefix": ns, "limit": "2"}).json()
    assert [i["key"] for i in r["items"]] == [ns + "0", ns + "1"]
    assert isinstance(r["next"], str)
    r2 = client.get("/api/kv/", {"prefix": ns, "limit": "2", "cursor": r["next"]}).json()
    assert [i["key"] for i in r2["items"]] == [ns + "2", ns + "3"]
    last = client.get("/api/kv/", {"prefix": ns, "limit": "10"}).json()
    assert last["next"] is None and len(last["items"]) == 5
    # a cursor is bound to its prefix
    bad = client.get("/api/kv/", {"prefix": ns + "x", "cursor": r["next"]})
    assert bad.status_code == 400


def test_listing_at_r_one_reads_a_standby():
    """A listing at r=one reads a standby (the first of kv.selection's read order, as for the
    ORM: kv.selection.kv_read_node); it may lag behind the quorum writes for a moment (bounded
    wait)."""
    import time

    from kv.nodes import CLUSTER
    from kv.selection import kv_read_node

    state = CLUSTER.state(max_age=0)
    assert kv_read_node() in state.standbys()
    client = make_client("rw")
    ns = f"one{secrets.token_hex(4)}/"
    for i in range(3):
        r = client.put(f"/api/kv/{ns}{i}", json.dumps({"value": i}),
                       content_type="application/json")
        assert r.status_code == 201
    deadline = time.monotonic() + 10
    while True:
        r = client.get("/api/kv/", {"prefix": ns, "r": "one"})
        assert r.status_code == 200, r.content
        keys = [i["key"] for i in r.json()["items"]]
        if keys == [f"{ns}{i}" for i in range(3)] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert keys == [f"{ns}{i}" for i in range(3)]
