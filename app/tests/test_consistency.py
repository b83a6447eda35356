"""Pure functions of kv.consistency, kv.cursors and kv.config: no database involved."""

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kv import consistency as c
from kv import cursors
from kv.config import parse_nodes


@pytest.mark.parametrize(("n", "k", "w", "r"), [(3, 1, 2, 2), (5, 2, 3, 3), (1, 0, 1, 1),
                                                (3, 0, 1, 3), (3, 2, 3, 1), (3, 9, 3, 1)])
def test_quorum_sizes(n, k, w, r):
    q = c.quorum_sizes(n, k)
    assert (q.w, q.r) == (w, r)
    assert q.r + q.w > q.n  # every read quorum meets every write quorum


@pytest.mark.parametrize(("value", "k", "names"), [
    ("", 0, []),
    ('ANY 1 ("s1", "s2")', 1, ["s1", "s2"]),
    ("any 2 (a,b,c)", 2, ["a", "b", "c"]),
    ("FIRST 1 (a, b)", 1, ["a", "b"]),
    ("2 (a, b)", 2, ["a", "b"]),
    ("a, b", 1, ["a", "b"]),
])
def test_parse_sync_standby_names(value, k, names):
    assert c.parse_sync_standby_names(value) == (k, names)


@given(st.integers(1, 2**23 - 1), st.integers(0, 2**40 - 1))
def test_version_roundtrip(timeline, counter):
    v = c.make_version(timeline, counter)
    assert 0 < v < 2**63
    assert c.split_version(v) == (timeline, counter)


@given(st.integers(1, 1000), st.integers(0, 2**40 - 1), st.integers(0, 2**40 - 1))
def test_newer_timeline_always_wins(timeline, old_counter, new_counter):
    assert c.make_version(timeline + 1, new_counter) > c.make_version(timeline, old_counter)


def test_newest_prefers_highest_version_and_ignores_missing():
    assert c.newest([None, (5, "a"), (7, "b"), None]) == (7, "b")
    assert c.newest([None, None]) is None


@given(st.integers(0, 2**64 - 1))
def test_lsn_roundtrip(lsn):
    assert c.parse_lsn(c.format_lsn(lsn)) == lsn


@given(st.integers(1, 10**6), st.integers(0, 2**64 - 1))
def test_session_token_roundtrip(tl, lsn):
    assert c.parse_session_token(c.format_session_token(tl, lsn)) == (tl, lsn)


@pytest.mark.parametrize("bad", ["", "x", "1-", "1-0/ZZ", "-1-0/1", "1 0/1", "1-0/1;drop"])
def test_session_token_refuses_garbage(bad):
    with pytest.raises(c.InvalidInput):
        c.parse_session_token(bad)


@pytest.mark.parametrize("key", ["a", "é", "a/b c", "x" * 512, "日" * 170])
def test_valid_keys(key):
    assert c.validate_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 513, "日" * 171, "a\x00b", "a\nb", "\x7f", "a\x85",
                                 "\ud800", 5, None])
def test_invalid_keys(key):
    with pytest.raises(c.InvalidInput) as err:
        c.validate_key(key)
    assert err.value.code == "bad_key"


@pytest.mark.parametrize("raw", [b"{", b'{"value": NaN}', b'{"value": Infinity}', b"\xff\xfe",
                                 b"[" * 100000, b'{"value": 1' + b"0" * 5000 + b"}"])
def test_loads_strict_refuses(raw):
    with pytest.raises(c.InvalidInput):
        c.loads_strict(raw)


@pytest.mark.parametrize("value", ["a\x00", {"k": "\ud800"}, [1e309 * 0], float("inf")])
def test_check_value_refuses_what_jsonb_cannot_store(value):
    with pytest.raises(c.InvalidInput):
        c.check_value(value)


def test_levels():
    assert c.parse_read_level(None) == "quorum"
    assert c.parse_write_level("one") == "one"
    for bad in ("all", "QUORUM", "1", ""):
        with pytest.raises(c.InvalidInput):
            c.parse_read_level(bad)
        with pytest.raises(c.InvalidInput):
            c.parse_write_level(bad)
    with pytest.raises(c.InvalidInput):
        c.parse_max_lag("-1", 5)
    with pytest.raises(c.InvalidInput):
        c.parse_max_lag("nan", 5)
    for bad in ("", " 1", "1_0", "inf", "1e999", "0x10", "+1", "86400.01", "٣"):
        with pytest.raises(c.InvalidInput):
            c.parse_max_lag(bad, 5)
    for good, lag in (("0", 0), ("86400", 86400), ("1e3", 1000), ("0.5", 0.5), ("-0", 0)):
        assert c.parse_max_lag(good, 5) == lag
    assert c.parse_max_lag(None, 5) == 5
    with pytest.raises(c.InvalidInput):
        cursors.parse_limit("", 100, 1000)
    assert c.parse_max_lag("0.5", 5) == 0.5


def test_etag_lists():
    assert c.parse_etag_list("*") is None
    assert c.parse_etag_list('"12", W/"13", "x"') == [12, 13, -1]


key_chars = st.characters(blacklist_categories=("Cc", "Cs"))


@given(st.text(key_chars, max_size=20), st.text(key_chars, min_size=1, max_size=50))
def test_cursor_roundtrip(prefix, rest):
    key = prefix + rest  # the last key of a page always starts with the listing's prefix
    cursor = cursors.encode_cursor(key, prefix)
    assert cursor.isascii() and len(cursor) <= 4096
    assert cursors.decode_cursor(cursor, prefix) == key


@given(st.one_of(st.text(max_size=100), st.binary(max_size=100).map(
    lambda b: base64.urlsafe_b64encode(b).decode("ascii").rstrip("="))))
def test_cursor_garbage_is_a_client_error(garbage):
    with pytest.raises(c.InvalidInput) as exc:
        cursors.decode_cursor(garbage, "")
    assert exc.value.code == "bad_cursor"


@given(st.text(key_chars, min_size=1, max_size=30), st.data())
def test_cursor_any_change_is_refused(key, data):
    cursor = cursors.encode_cursor(key, "")
    i = data.draw(st.integers(0, len(cursor) - 1))
    ch = data.draw(st.sampled_from("AQgw_-:0z"))
    if cursor[i] == ch:
        return
    with pytest.raises(c.InvalidInput) as exc:
        cursors.decode_cursor(cursor[:i] + ch + cursor[i + 1:], "")
    assert exc.value.code == "bad_cursor"


def test_cursor_bound_to_its_prefix():
    with pytest.raises(c.InvalidInput):
        cursors.decode_cursor(cursors.encode_cursor("a1", "a"), "b")


def test_parse_limit():
    assert cursors.parse_limit(None, 100, 1000) == 100
    for bad in ("0", "1001", "-1", "x", "²", "1.5"):
        with pytest.raises(c.InvalidInput):
            cursors.parse_limit(bad, 100, 1000)


def test_parse_nodes():
    nodes = parse_nodes("pg1=10.0.0.11:5432, pg2=db2 ,pg3=[::1]:6543")
    assert [(n.name, n.host, n.port) for n in nodes] == [
        ("pg1", "10.0.0.11", 5432), ("pg2", "db2", 5432), ("pg3", "::1", 6543)]
    from django.core.exceptions import ImproperlyConfigured

    for bad in ("", "pg1", "default=h:1", "a=h:1,a=h:2", "a=h:99999", "a b=h"):
        with pytest.raises(ImproperlyConfigured):
            parse_nodes(bad)
