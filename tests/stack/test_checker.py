"""The history checker on hand-made histories: valid ones pass, broken ones are caught.

No lab needed; runs in milliseconds (`pytest tests/stack -m "not lab"`).
"""

from __future__ import annotations

import itertools
import random

import pytest

from .checker import check

T = 1 << 40  # versions: timeline << 40 | counter


class H:
    """A tiny builder of histories: times are explicit, ids automatic."""

    def __init__(self) -> None:
        self.ops: list[dict] = []
        self._ids = itertools.count(1)

    def w(self, key, value, start, end, level="quorum", outcome="ok", version=None, process=0):
        op = {"id": next(self._ids), "process": process, "op": "write", "key": key,
              "value": value, "level": level, "start": start, "end": end, "outcome": outcome,
              "version": version}
        self.ops.append(op)
        return op["id"]

    def r(self, key, value, version, start, end, level="quorum", token_of=None, final=False,
          process=1, found=True, max_lag=None):
        op = {"id": next(self._ids), "process": process, "op": "read", "key": key,
              "value": value, "found": found and value is not None, "level": level,
              "start": start, "end": end, "outcome": "ok",
              "version": version if value is not None else None, "token_of": token_of,
              "final": final, "max_lag": max_lag}
        self.ops.append(op)
        return op["id"]

    def d(self, key, start, end, level="quorum", outcome="ok", process=0):
        """A delete: the API answers 204 without a version."""
        op = {"id": next(self._ids), "process": process, "op": "delete", "key": key,
              "level": level, "start": start, "end": end, "outcome": outcome}
        self.ops.append(op)
        return op["id"]

    def final(self, key, value, version, t=100.0):
        return self.r(key, value, version, t, t + 0.01, level="primary", final=True)


def kinds(h: H, **kw) -> set[str]:
    return check(h.ops, **kw).kinds()


# ------------------------------------------------------------------ histories that must pass


def test_sequential_history_passes():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.r("k", "a", T + 1, 2, 3)
    h.w("k", "b", 4, 5, version=T + 2)
    h.r("k", "b", T + 2, 6, 7, level="primary")
    h.final("k", "b", T + 2)
    res = check(h.ops, primary_stable=True)
    assert res.ok, res.violations


def test_overwrite_is_not_a_lost_write():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 3, version=T + 5)
    h.final("k", "b", T + 5)
    assert check(h.ops).ok


def test_concurrent_write_may_or_may_not_be_visible():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 10, version=T + 2)  # in flight during both reads
    h.r("k", "a", T + 1, 3, 4)
    h.r("k", "b", T + 2, 5, 6)
    h.r("k", "a", T + 1, 7, 8)  # r=quorum is not linearizable: allowed
    h.final("k", "b", T + 2)
    assert check(h.ops).ok


def test_indeterminate_write_may_or_may_not_have_happened():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "x", 2, 3, outcome="indeterminate", version=T + 2)  # committed_locally
    h.w("k", "y", 4, None, outcome="indeterminate")  # timed out, no version
    h.r("k", "y", T + 3, 5, 6, level="primary")  # happened after all
    h.final("k", "a", T + 1)  # ... and was lost at a failover, with x: both allowed
    assert check(h.ops).ok


def test_w_one_write_may_be_lost_at_failover_but_not_otherwise():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 3, level="one", version=T + 2)
    h.final("k", "a", T + 1)
    assert check(h.ops, primary_stable=False).ok
    assert "lost_write" in kinds(h, primary_stable=True)


def test_failed_write_is_never_required():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 3, outcome="failed")
    h.r("k", "a", T + 1, 4, 5)
    h.final("k", "a", T + 1)
    assert check(h.ops, primary_stable=True).ok


def test_versions_across_a_failover_keep_order():
    h = H()
    h.w("k", "a", 0, 1, version=T + 7)
    h.w("k", "b", 5, 6, version=2 * T + 3)  # new timeline: higher although its counter is lower
    h.r("k", "b", 2 * T + 3, 7, 8)
    h.final("k", "b", 2 * T + 3)
    assert check(h.ops).ok


def test_token_read_sees_its_write_or_newer():
    h = H()
    wid = h.w("k", "a", 0, 1, version=T + 1, process=2)
    h.w("k", "b", 1.5, 2, version=T + 2)
    h.r("k", "b", T + 2, 3, 4, level="token", token_of=wid, process=2)
    h.r("k", "a", T + 1, 3, 4, level="token", token_of=wid, process=2)
    h.final("k", "b", T + 2)
    assert check(h.ops).ok


def test_r_one_may_be_stale():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 3, version=T + 2)
    h.r("k", "a", T + 1, 4, 5, level="one")
    h.r("k", None, None, 4, 5, level="one")  # a standby that had not even seen "a"
    h.final("k", "b", T + 2)
    assert check(h.ops, primary_stable=True).ok


def test_deleted_key_reads_not_found_and_may_be_written_again():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.d("k", 2, 3)
    h.r("k", None, None, 4, 5)  # the tombstone (or the key purged everywhere)
    h.r("k", None, None, 4, 5, level="primary")
    h.r("k", "a", T + 1, 2.5, 3.5)  # concurrent with the delete: either answer
    h.w("k", "b", 6, 7, version=T + 9)
    h.r("k", "b", T + 9, 8, 9)
    h.final("k", "b", T + 9)
    res = check(h.ops, primary_stable=True)
    assert res.ok, res.violations


def test_final_read_of_a_deleted_key_is_not_a_lost_write():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.d("k", 2, None, outcome="indeterminate")  # may have happened
    h.final("k", None, None)
    assert check(h.ops, primary_stable=True).ok


def test_r_one_within_max_lag_passes():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 3, version=T + 2)
    # b was acknowledged 1.5 s before: within max_lag 1 + slack 2
    h.r("k", "a", T + 1, 4.5, 4.6, level="one", max_lag=1.0)
    h.r("k", "b", T + 2, 9, 9.1, level="one", max_lag=1.0)
    h.r("k", "a", T + 1, 9, 9.1, level="one")  # no max_lag sent: not bounded here
    h.final("k", "b", T + 2)
    res = check(h.ops, primary_stable=True)
    assert res.ok, res.violations


# ------------------------------------------------------------------ histories that must fail


def test_deleted_key_coming_back_is_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.d("k", 2, 3)
    h.r("k", "a", T + 1, 4, 5)  # a standby that missed the delete won the quorum read
    h.final("k", None, None)
    res = check(h.ops)
    assert res.kinds() == {"deleted_key_read"}, res.violations
    assert res.summary()["violations_by_kind"] == {"deleted_key_read": 1}


def test_deleted_key_coming_back_in_the_final_read_is_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.d("k", 2, 3)
    h.final("k", "a", T + 1)
    assert "deleted_key_read" in kinds(h, primary_stable=True)


def test_failed_delete_does_not_explain_a_missing_key():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.d("k", 2, 3, outcome="failed")
    h.r("k", None, None, 4, 5)
    h.final("k", "a", T + 1)
    assert kinds(h) == {"stale_read"}


def test_delete_before_the_write_does_not_explain_a_missing_key():
    h = H()
    h.d("k", 0, 1)
    h.w("k", "a", 2, 3, version=T + 1)
    h.r("k", None, None, 4, 5)
    h.final("k", None, None)
    assert kinds(h) == {"stale_read", "lost_write"}


def test_r_one_beyond_max_lag_is_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 3, version=T + 2)
    h.r("k", "a", T + 1, 6.5, 6.6, level="one", max_lag=1.0)  # b acked 3.5 s before
    h.final("k", "b", T + 2)
    assert kinds(h, primary_stable=True) == {"lagging_read"}
    assert check(h.ops, primary_stable=True, lag_slack=4.0).ok
    assert check(h.ops, primary_stable=False).ok  # no bound across a failover




def test_lost_quorum_write_is_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 3, version=T + 2)
    h.final("k", "a", T + 1)
    res = check(h.ops)
    assert "lost_write" in res.kinds()
    assert not res.ok


def test_lost_write_when_key_vanished():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.final("k", None, None)
    assert "lost_write" in kinds(h)


def test_missing_final_read_is_reported():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    assert "no_final_read" in kinds(h)


def test_stale_quorum_read_is_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 3, version=T + 2)
    h.r("k", "a", T + 1, 4, 5, level="quorum")
    h.final("k", "b", T + 2)
    assert kinds(h) == {"stale_read"}


def test_stale_primary_read_is_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.r("k", None, None, 2, 3, level="primary")
    h.final("k", "a", T + 1)
    assert "stale_read" in kinds(h)


def test_primary_read_missing_acknowledged_w_one_write_when_primary_stable():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 3, level="one", version=T + 2)
    h.r("k", "a", T + 1, 4, 5, level="primary")
    h.final("k", "b", T + 2)
    assert check(h.ops, primary_stable=False).ok
    assert "stale_read" in kinds(h, primary_stable=True)


def test_token_read_that_misses_its_write_is_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    wid = h.w("k", "b", 2, 3, level="one", version=T + 2, process=2)
    h.r("k", "a", T + 1, 4, 5, level="token", token_of=wid, process=2)
    h.final("k", "b", T + 2)
    assert "token_read_missed_write" in kinds(h, primary_stable=True)


def test_token_read_of_quorum_write_missed_even_after_failover():
    h = H()
    wid = h.w("k", "a", 0, 1, version=T + 1, process=2)
    h.r("k", None, None, 4, 5, level="token", token_of=wid, process=2)
    h.final("k", "a", T + 1)
    assert "token_read_missed_write" in kinds(h, primary_stable=False)


def test_read_of_a_failed_write_is_caught():
    h = H()
    h.w("k", "a", 0, 1, outcome="failed")
    h.r("k", "a", T + 1, 2, 3, level="one")
    assert "read_of_failed_write" in kinds(h)


def test_phantom_and_future_reads_are_caught():
    h = H()
    h.r("k", "zzz", T + 9, 0, 1)
    h.r("k", "later", T + 1, 2, 3)
    h.w("k", "later", 4, 5, version=T + 1)
    h.final("k", "later", T + 1)
    assert {"phantom_read", "read_from_future"} <= kinds(h)


def test_version_mismatch_is_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.r("k", "a", T + 4, 2, 3)
    h.final("k", "a", T + 1)
    assert "version_mismatch" in kinds(h)


def test_write_order_against_real_time_is_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 5)
    h.w("k", "b", 2, 3, version=T + 4)  # began after "a" was acknowledged, older version
    h.final("k", "a", T + 5)
    assert "write_order" in kinds(h)


def test_non_linearizable_primary_reads_are_caught():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "b", 2, 10, version=T + 2)  # in flight
    h.r("k", "b", T + 2, 3, 4, level="primary")
    h.r("k", "a", T + 1, 5, 6, level="primary")  # went back in time
    h.final("k", "b", T + 2)
    assert "not_linearizable" in kinds(h, primary_stable=True)
    # the same reads at r=quorum are allowed (a write in flight)
    for op in h.ops:
        if op["op"] == "read" and not op["final"]:
            op["level"] = "quorum"
    assert check(h.ops, primary_stable=True).ok


def test_duplicate_values_are_refused():
    h = H()
    h.w("k", "a", 0, 1, version=T + 1)
    h.w("k", "a", 2, 3, version=T + 2)
    with pytest.raises(ValueError, match="unique"):
        check(h.ops)


# ------------------------------------------------------------------ a simulated register


def _simulate(seed: int, lose: bool) -> list[dict]:
    """Random concurrent history of a correct register (then, with ``lose``, one quorum write
    lost at the end) with writes applied at a point inside their interval."""
    rnd = random.Random(seed)
    events = []  # (point, kind, ...)
    h = H()
    version = T
    state = (None, None)
    t = 0.0
    pending = []
    for i in range(200):
        t += rnd.random()
        start, end = t, t + rnd.random() * 3
        point = rnd.uniform(start, end)
        if rnd.random() < 0.5:
            events.append((point, "w", f"v{seed}-{i}", start, end))
        else:
            events.append((point, "r", None, start, end))
    last_ok = None
    for _point, kind, value, start, end in sorted(events):
        if kind == "w":
            version += 1
            state = (value, version)
            pending.append(h.w("k", value, start, end, version=version))
            last_ok = pending[-1]
        else:
            h.r("k", state[0], state[1], start, end, level=rnd.choice(["quorum", "primary"]))
    value, v = state
    if lose and last_ok is not None:
        prev = [o for o in h.ops if o["op"] == "write" and o["version"] < v]
        value, v = (prev[-1]["value"], prev[-1]["version"]) if prev else (None, None)
    h.final("k", value, v, t=t + 10)
    return h.ops


@pytest.mark.parametrize("seed", range(20))
def test_simulated_correct_register_passes(seed):
    res = check(_simulate(seed, lose=False), primary_stable=True)
    assert res.ok, res.violations[:3]


@pytest.mark.parametrize("seed", range(5))
def test_simulated_lost_last_write_fails(seed):
    assert "lost_write" in check(_simulate(seed, lose=True)).kinds()
