"""Every documented 4xx, with hostile input; never a 500."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kv.cursors import CURSOR_SALT

from tests.conftest import TOKENS, make_client, unique


def test_oversized_key(client):
    r = client.put("/api/kv/" + "k" * 513, {"value": 1}, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "bad_key"
    r = client.post("/api/kv/", {"key": "é" * 257, "value": 1}, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "bad_key"


@pytest.mark.parametrize("path", ["/api/kv/a%00b", "/api/kv/a%0Ab", "/api/kv/%7F",
                                  "/api/kv/a%C2%85"])
def test_control_characters_in_key(client, path):
    for method in (client.get, client.delete):
        r = method(path)
        assert r.status_code == 400, (path, r.content)
        assert r.json()["error"] == "bad_key"


def test_control_characters_in_posted_key(client):
    r = client.post("/api/kv/", {"key": "a\u0001", "value": 1}, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "bad_key"
    r = client.post("/api/kv/", {"key": 12, "value": 1}, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "bad_key"


def test_oversized_value(client):
    big = "x" * 70000  # KV_MAX_VALUE_BYTES is 65536 in the tests
    r = client.put(f"/api/kv/{unique()}", {"value": big}, content_type="application/json")
    assert r.status_code == 413 and r.json()["error"] == "value_too_large"
    just_fits = "y" * (65536 - 2)
    r = client.put(f"/api/kv/{unique()}", {"value": just_fits}, content_type="application/json")
    assert r.status_code == 201, r.content
    r = client.put(f"/api/kv/{unique()}", {"value": just_fits + "z"},
                   content_type="application/json")
    assert r.status_code == 413


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"value": NaN}', b'{"value": -Infinity}',
                                  b"\xff\xfe{}", b'{"value": "\\ud800"}', b'{"value": "a\\u0000"}',
                                  b"[" * 5000 + b"]" * 5000, b'{"value": 1' + b"0" * 5000 + b"}",
                                  b"[]", b"1", b'{"valu": 1}', b'{"value": 1, "extra": 2}',
                                  b""])
def test_malformed_json(client, body):
    r = client.put(f"/api/kv/{unique()}", body, content_type="application/json")
    assert r.status_code == 400, (body[:40], r.content)
    assert r.json()["error"] == "bad_json"


def test_deep_but_valid_nesting_is_refused_cleanly(client):
    body = b'{"value": ' + b"[" * 300 + b"]" * 300 + b"}"
    r = client.put(f"/api/kv/{unique()}", body, content_type="application/json")
    assert r.status_code in (201, 400)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/xml", ""])
def test_wrong_content_type(client, ctype):
    r = client.put(f"/api/kv/{unique()}", b'{"value": 1}', content_type=ctype)
    assert r.status_code == 415, (ctype, r.content)
    assert r.json()["error"] == "unsupported_media_type"


@pytest.mark.parametrize("query,code", [
    ("?r=all", "bad_consistency"), ("?r=", "bad_consistency"), ("?r=QUORUM", "bad_consistency"),
    ("?r=one&max_lag=abc", "bad_max_lag"), ("?r=one&max_lag=-3", "bad_max_lag"),
    ("?r=one&max_lag=", "bad_max_lag"), ("?r=one&max_lag=1_0", "bad_max_lag"),
    ("?r=one&max_lag=%205", "bad_max_lag"), ("?r=one&max_lag=inf", "bad_max_lag"),
    ("?max_lag=86400.5", "bad_max_lag"),
])
def test_unknown_read_level(client, query, code):
    for path in ("/api/kv/x", "/api/kv/"):
        r = client.get(f"{path}{query}")
        assert r.status_code == 400, (path, query, r.content)
        assert r.json()["error"] == code


@pytest.mark.parametrize("query", ["", "?max_lag=0", "?max_lag=86400", "?max_lag=1e3",
                                   "?max_lag=0.25", "?r=one&max_lag=2.5E-1"])
def test_read_parameters_the_schema_allows(client, query):
    assert client.get(f"/api/kv/{unique()}{query}").status_code == 404
    assert client.get(f"/api/kv/{query}").status_code == 200


@pytest.mark.parametrize("query", ["?w=all", "?w=two", "?w=primary", "?w="])
def test_unknown_write_level(client, query):
    r = client.put(f"/api/kv/x{query}", {"value": 1}, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "bad_consistency"
    r = client.delete(f"/api/kv/x{query}")
    assert r.status_code == 400 and r.json()["error"] == "bad_consistency"
    r = client.post(f"/api/kv/{query}", {"key": unique(), "value": 1},
                    content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "bad_consistency"


@pytest.mark.parametrize("cursor", ["garbage", "eyJ9", "%%%", "e30", "x" * 5000,
                                    "eyJhIjogMSwgInAiOiAiIn0"])
def test_bad_cursor(client, cursor):
    r = client.get("/api/kv/", {"cursor": cursor})
    assert r.status_code == 400 and r.json()["error"] == "bad_cursor"


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "100000", "1e3", ""])
def test_bad_limit(client, limit):
    r = client.get("/api/kv/", {"limit": limit})
    assert r.status_code == 400 and r.json()["error"] == "bad_limit"


@pytest.mark.parametrize("fresh,status", [("1", 200), ("true", 200), ("0", 200), ("false", 200),
                                          ("yes", 400), ("", 400)])
def test_cluster_fresh_parameter(client, fresh, status):
    r = client.get("/api/cluster", {"fresh": fresh})
    assert r.status_code == status, r.content
    if status == 400:
        assert r.json()["error"] == "bad_request"


def test_bad_session_token(client):
    r = client.get("/api/kv/x", headers={"X-KV-Token": "nonsense"})
    assert r.status_code == 400 and r.json()["error"] == "bad_token"


def test_bad_preconditions(client):
    r = client.put(f"/api/kv/{unique()}", {"value": 1}, content_type="application/json",
                   headers={"If-None-Match": '"5"'})
    assert r.status_code == 400
    r = client.delete(f"/api/kv/{unique()}", headers={"If-None-Match": "*"})
    assert r.status_code == 400 and r.json()["error"] == "bad_precondition"


@pytest.mark.parametrize("if_match", ['"1"', "*"])
def test_if_match_and_if_none_match_together_never_hold(client, if_match):
    """RFC 9110 13.2.2: If-None-Match: * is evaluated when If-Match held, i.e. the key exists."""
    key = unique()
    both = {"If-None-Match": "*", "If-Match": if_match}
    r = client.put(f"/api/kv/{key}", {"value": 1}, content_type="application/json", headers=both)
    assert r.status_code == 412 and r.json()["error"] == "precondition_failed"
    r = client.put(f"/api/kv/{key}", {"value": 1}, content_type="application/json")
    assert r.status_code == 201
    etag = r["ETag"]
    r = client.put(f"/api/kv/{key}", {"value": 2}, content_type="application/json",
                   headers={"If-None-Match": "*", "If-Match": etag if if_match != "*" else "*"})
    assert r.status_code == 412
    assert client.get(f"/api/kv/{key}").json()["value"] == 1


@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz",
                                  "Bearer wrong-token-1234567890", "Bearer a b",
                                  "Bearer " + "x" * 600, "bearer\x00x"])
def test_missing_or_wrong_token(auth):
    from django.test import Client

    c = Client(headers={"Authorization": auth} if auth is not None else {})
    r = c.get("/api/kv/x")
    assert r.status_code == 401, (auth, r.content)
    assert r.json()["error"] == "unauthorized"
    assert r["WWW-Authenticate"].startswith("Bearer")
    assert c.get("/api/cluster").status_code == 401
    assert c.put("/api/kv/x", {"value": 1}, content_type="application/json").status_code == 401


def test_under_scoped_tokens():
    ro, wo = make_client("ro"), make_client("wo")
    key = unique()
    r = ro.put(f"/api/kv/{key}", {"value": 1}, content_type="application/json")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert ro.delete(f"/api/kv/{key}").status_code == 403
    assert ro.post("/api/kv/", {"key": key, "value": 1},
                   content_type="application/json").status_code == 403
    assert wo.put(f"/api/kv/{key}", {"value": 1}, content_type="application/json").status_code \
        == 201
    r = wo.get(f"/api/kv/{key}")
    assert r.status_code == 403
    assert ro.get(f"/api/kv/{key}").status_code == 200


def test_method_not_allowed(client):
    r = client.post("/api/kv/some-key", {"value": 1}, content_type="application/json")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    r = client.put("/api/kv/", {"value": 1}, content_type="application/json")
    assert r.status_code == 405
    r = client.patch("/api/kv/k", {"value": 1}, content_type="application/json")
    assert r.status_code == 405


def test_unknown_path_is_json_404(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_bad_host_header_is_json_400():
    from django.test import Client

    r = Client(headers={"Authorization": f"Bearer {TOKENS['rw'][1]}"},
               HTTP_HOST="evil.example").get("/api/kv/x")
    assert r.status_code == 400
    assert json.loads(r.content)["error"] == "bad_request"


def test_bad_list_prefix(client):
    r = client.get("/api/kv/", {"prefix": "a\x01"})
    assert r.status_code == 400 and r.json()["error"] == "bad_key"


def test_own_instance_address_is_an_allowed_host():
    from django.test import Client

    # KV_INSTANCE is testhost:8000 in the tests: probes by the instance's own address work
    assert Client(HTTP_HOST="testhost:8000").get("/healthz").status_code == 200
    assert Client(HTTP_HOST="10.9.9.9:8000").get("/healthz").status_code == 400


# ---------------------------------------------------------------- listing cursors
# A cursor is signed by the service (HMAC keyed from SECRET_KEY). Anything else, and anything a
# signed cursor holds that is not a key of its listing, is 400 bad_cursor before any database
# work: never a 500 or a 503, and never a node marked failed.


def _unsigned(payload) -> str:
    """A cursor in the shape of an issued one, but made by a client (no valid signature)."""
    import base64

    raw = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def _signed(payload) -> str:
    """A validly signed cursor holding ``payload`` (as if the signing key had leaked)."""
    from django.core import signing

    raw = json.dumps(payload, separators=(",", ":"))  # ensure_ascii: lone surrogates survive
    import base64

    body = base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")
    return signing.Signer(salt=CURSOR_SALT, algorithm="sha256").sign(body)


def _node_states():
    from kv.nodes import CLUSTER

    st = CLUSTER.state(max_age=0)
    return {n: (s.eligible, s.role) for n, s in st.nodes.items()}


def _failed_nodes():
    from kv.nodes import CLUSTER

    return set(CLUSTER._failed)


def _bad_cursors() -> dict[str, str]:
    from django.core import signing

    return {
        "nul": _unsigned({"a": "a\u0000b", "p": ""}),
        "surrogate": _unsigned({"a": "a\ud800", "p": ""}),
        "forged": _unsigned({"a": "zzz", "p": ""}),
        "signed_nul": _signed({"a": "a\u0000b", "p": ""}),
        "signed_surrogate": _signed({"a": "\udfff", "p": ""}),
        "signed_control": _signed({"a": "a\u0001", "p": ""}),
        "signed_not_a_string": _signed({"a": 12, "p": ""}),
        "signed_too_long": _signed({"a": "k" * 600, "p": ""}),
        "signed_other_prefix": _signed({"a": "zzz", "p": "x"}),
        "signed_not_json": signing.Signer(salt=CURSOR_SALT, algorithm="sha256").sign(
            "bm90IGpzb24"),
        "wrong_salt": signing.Signer(salt="another", algorithm="sha256").sign(
            _unsigned({"a": "zzz", "p": ""})),
    }


@pytest.mark.parametrize("level", ["primary", "one", "quorum"])
def test_forged_and_malformed_cursors_are_400_at_every_level(client, level):
    before = _node_states()
    for name, cursor in _bad_cursors().items():
        r = client.get("/api/kv/", {"cursor": cursor, "r": level})
        assert r.status_code == 400, (name, level, r.status_code, r.content)
        assert r.json()["error"] == "bad_cursor", (name, r.content)
    # signed, but its key lies outside the listing's prefix
    r = client.get("/api/kv/", {"cursor": _signed({"a": "b", "p": "x"}), "prefix": "x",
                                "r": level})
    assert r.status_code == 400 and r.json()["error"] == "bad_cursor", r.content
    assert not _failed_nodes()
    assert _node_states() == before


def test_tampered_cursor_is_400(client):
    ns = unique("cur") + "/"
    for i in range(3):
        r = client.put(f"/api/kv/{ns}{i}", {"value": i}, content_type="application/json")
        assert r.status_code == 201
    page = client.get("/api/kv/", {"prefix": ns, "limit": "1"}).json()
    cursor = page["next"]
    assert cursor
    ok = client.get("/api/kv/", {"prefix": ns, "limit": "1", "cursor": cursor})
    assert ok.status_code == 200 and ok.json()["items"][0]["key"] == f"{ns}1"
    # flip every character of the cursor in turn: each variant is refused
    for i in range(len(cursor)):
        for repl in ("A", "_"):
            if cursor[i] == repl:
                continue
            bad = cursor[:i] + repl + cursor[i + 1:]
            r = client.get("/api/kv/", {"prefix": ns, "limit": "1", "cursor": bad})
            assert r.status_code == 400 and r.json()["error"] == "bad_cursor", (i, bad)
    # a cursor of another prefix, re-labelled by the client, is refused too
    import base64

    body, _sig = cursor.rsplit(":", 1)
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["p"] = ""
    r = client.get("/api/kv/", {"cursor": _unsigned(data) + ":" + _sig})
    assert r.status_code == 400 and r.json()["error"] == "bad_cursor"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(garbage=st.one_of(
    st.text(max_size=200),
    st.binary(max_size=150).map(
        lambda b: __import__("base64").urlsafe_b64encode(b).decode("ascii").rstrip("=")),
    st.builds(lambda a, p: _unsigned({"a": a, "p": p}), st.text(max_size=20),
              st.text(max_size=5)),
    st.builds(lambda a, s: _unsigned({"a": a, "p": ""}) + ":" + s, st.text(max_size=10),
              st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
                      min_size=0, max_size=50)),
), level=st.sampled_from(["primary", "one", "quorum"]))
def test_garbage_cursors_never_5xx(garbage, level):
    client = make_client("rw")
    r = client.get("/api/kv/", {"cursor": garbage, "r": level})
    if garbage == "":
        assert r.status_code == 200  # an empty cursor is the first page
        return
    assert r.status_code == 400, (garbage, r.status_code, r.content)
    assert r.json()["error"] == "bad_cursor"
    assert not _failed_nodes()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_health_endpoints_refuse_other_methods_in_json(path, method):
    from django.test import Client

    c = Client(enforce_csrf_checks=True)  # as a real client: Django's CSRF check is on
    r = getattr(c, method)(path)
    assert r.status_code == 405, r.content
    assert r["Content-Type"] == "application/json" and r["Allow"] == "GET, HEAD, OPTIONS"
    assert r.json()["error"] == "method_not_allowed"
    assert c.options(path).status_code == 200


def test_csrf_refusal_is_json():
    from django.test import Client

    r = Client(enforce_csrf_checks=True).post("/metrics")
    assert r.status_code == 403 and r["Content-Type"] == "application/json", r.content
    assert r.json()["error"] == "forbidden"
