"""Per-key history checker for the KV service (docs/consistency.md, last section).

A history is a list of operations, one JSON object each:

    {"id": 17, "process": 3, "op": "write" | "read" | "delete", "key": "k1",
     "value": <the value written, or the value a read returned (null when not found)>,
     "found": true,               # reads only: false for a 404
     "level": "quorum" | "one" | "primary" | "token",
     "start": 12.31, "end": 12.35,   # time.monotonic() of one process; end may be null
     "outcome": "ok" | "failed" | "indeterminate",
     "version": 1099511627781,    # returned by an ok write, a 503 committed_locally, or a read
     "token_of": 12,              # token reads: id of the write whose X-KV-Token was sent
     "max_lag": 1.0,              # r=one reads that sent max_lag (seconds)
     "final": false}              # the r=primary reads made after every fault was healed

Writes carry unique values, so a read's value names the write it observed. Versions are per-key
totally ordered and increase with every write in commit order (the app takes them under the row
lock, with the timeline in the high bits), so the version order IS the order the writes took
effect: no search over permutations is needed, and a Wing-Gong search over one register reduces
to checking that the version order agrees with real time.

Outcomes: ``failed`` means the write certainly did not happen (4xx, 503 without
``committed_locally``, connection refused); ``indeterminate`` means it may or may not have happened
(timeout, 502/504, 503 ``committed_locally``). Only ``ok`` writes bind the system.

What is checked (each finding is a violation with a ``kind``):

- ``lost_write`` (a): after the faults healed, a final r=primary read of each key must return a
  version >= every acknowledged ``w=quorum`` write's version. An overwrite by a later write is
  fine (its version is higher); a final version lower than an acknowledged quorum write's means
  that write was lost. With ``primary_stable`` (no failover in the run) the same holds for
  acknowledged ``w=one`` writes, which survive everything but a failover.
- ``stale_read`` (b): every ok r=quorum / r=primary read returns a version >= the highest version
  of the ``w=quorum`` writes acknowledged before the read started (r=primary, with
  ``primary_stable``: of every acknowledged write). Concurrent and indeterminate writes may or
  may not be visible.
- ``token_read_missed_write`` (c): a read sending the X-KV-Token of write W returns W's version or
  newer (W at w=one only counts with ``primary_stable``).
- ``phantom_read`` / ``read_of_failed_write`` / ``read_from_future`` / ``version_mismatch``: a
  read's value must come from a write that was issued before the read ended and did not certainly
  fail, with the version that write was given.
- ``write_order``: an acknowledged write that ended before another began has a lower version;
  two writes never share a version.
- ``no_final_read``: a key with acknowledged quorum writes has no ok final read.
- ``deleted_key_read``: a delete D acknowledged at ``w=quorum`` (any level with
  ``primary_stable``) hides every write acknowledged before D began: an r=quorum / r=primary
  read that starts after D was acknowledged and returns such a write's value brought a deleted
  key back. Deletes carry no version (the API answers 204), so they are ordered by real time
  only: a not-found read is explained by any delete that did not certainly fail, began before
  the read ended and was not acknowledged before the newest write the read had to see began
  (this applies to ``stale_read``, token reads and ``lost_write`` alike).
- ``lagging_read`` (only with ``primary_stable``): an ok r=one read that sent ``max_lag`` L
  returns a version >= every write acknowledged before ``start - L - lag_slack``. ``lag_slack``
  (``check``'s argument, default ``LAG_SLACK``) allows for how the app measures lag: each worker
  reuses its probe of the nodes for ``KV_NODE_CACHE_TTL`` (1 s) and the measurement itself
  trails by up to about a second.
- ``not_linearizable`` (only with ``primary_stable``): r=primary reads and the writes, ordered by
  version, admit linearization points (the Gibbons-Korach condition for registers whose write
  order is known: no operation of a later version ends before an operation of an earlier
  version starts). r=quorum reads are not linearizable by design and take no part in it;
  on a key with deletes, not-found reads take no part either (a delete has no version to place
  them by).
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

INF = math.inf
READ_LEVELS_FRESH = ("quorum", "primary")
MAX_VIOLATIONS_PER_KIND = 20
# seconds an r=one read's data may trail its max_lag: KV_NODE_CACHE_TTL (1 s, the age of the
# probe that measured the lag) + 1 s for the measurement itself
LAG_SLACK = 2.0


@dataclass
class Op:
    id: int
    process: int
    op: str
    key: str
    level: str
    start: float
    end: float | None
    outcome: str
    value: Any = None
    found: bool = True
    version: int | None = None
    token_of: int | None = None
    max_lag: float | None = None
    final: bool = False
    status: int | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Op:
        version = d.get("version")
        return cls(
            id=int(d["id"]), process=int(d.get("process", 0)), op=d["op"], key=str(d["key"]),
            level=d.get("level", "quorum"), start=float(d["start"]),
            end=None if d.get("end") is None else float(d["end"]),
            outcome=d["outcome"], value=d.get("value"), found=bool(d.get("found", True)),
            version=None if version in (None, "") else int(version),
            token_of=None if d.get("token_of") is None else int(d["token_of"]),
            max_lag=None if d.get("max_lag") is None else float(d["max_lag"]),
            final=bool(d.get("final", False)), status=d.get("status"), error=d.get("error"),
        )

    @property
    def end_or_inf(self) -> float:
        return INF if self.end is None or self.outcome != "ok" else self.end

    def brief(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "error"}


@dataclass
class Result:
    violations: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)
    dropped: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, kind: str, key: str, detail: str, *ops: Op) -> None:
        if sum(1 for v in self.violations if v["kind"] == kind) >= MAX_VIOLATIONS_PER_KIND:
            self.dropped[kind] = self.dropped.get(kind, 0) + 1
            return
        self.violations.append({"kind": kind, "key": key, "detail": detail,
                                "ops": [o.brief() for o in ops]})

    def kinds(self) -> set[str]:
        return {v["kind"] for v in self.violations} | set(self.dropped)

    def summary(self) -> dict:
        by_kind: dict[str, int] = defaultdict(int)
        for v in self.violations:
            by_kind[v["kind"]] += 1
        for k, n in self.dropped.items():
            by_kind[k] += n
        return {"valid": self.ok, "violations_by_kind": dict(by_kind), "counts": self.counts,
                "checked": self.checked}


def _vkey(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def load(path) -> list[Op]:
    with open(path) as f:
        data = json.load(f)
    ops = data["history"] if isinstance(data, dict) else data
    return [Op.from_dict(d) for d in ops]


def count_outcomes(ops: list[Op]) -> dict:
    c: dict[str, int] = defaultdict(int)
    for o in ops:
        c[o.outcome] += 1
        c[f"{o.op}_{o.level}_{o.outcome}"] += 1
    c["total"] = len(ops)
    return dict(sorted(c.items()))


def check(history: list[dict] | list[Op], *, primary_stable: bool = False,
          lag_slack: float = LAG_SLACK) -> Result:
    """Check a whole history; ``primary_stable``: no failover happened during the run."""
    ops = [o if isinstance(o, Op) else Op.from_dict(o) for o in history]
    res = Result(counts=count_outcomes(ops))
    res.checked = ["lost_write", "stale_read", "token_read", "read_validity", "write_order",
                   "deleted_key_read"]
    if primary_stable:
        res.checked += ["linearizable_primary", "lagging_read"]
    by_id = {o.id: o for o in ops}
    if len(by_id) != len(ops):
        raise ValueError("operation ids are not unique")
    by_key: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        by_key[o.key].append(o)
    for key, kops in sorted(by_key.items()):
        _check_key(key, kops, by_id, res, primary_stable, lag_slack)
    return res


def _binding(w: Op, primary_stable: bool) -> bool:
    """An acknowledged write every later fresh read must see."""
    return w.op == "write" and w.outcome == "ok" and w.version is not None and (
        w.level == "quorum" or primary_stable)


def _deleted_after(deletes: list[Op], w: Op, before: float) -> Op | None:
    """A delete that may have taken effect after write ``w`` and before ``before``: it did not
    certainly fail, began before ``before`` and was not acknowledged before ``w`` began."""
    for d in deletes:
        if d.outcome == "failed" or d.start >= before:
            continue
        if d.outcome == "ok" and d.end is not None and d.end < w.start:
            continue
        return d
    return None


def _check_key(key: str, kops: list[Op], by_id: dict[int, Op], res: Result,
               primary_stable: bool, lag_slack: float = LAG_SLACK) -> None:
    writes = [o for o in kops if o.op == "write"]
    deletes = [o for o in kops if o.op == "delete"]
    reads = [o for o in kops if o.op == "read" and o.outcome == "ok"]

    writes_by_value: dict[str, Op] = {}
    for w in writes:
        vk = _vkey(w.value)
        if vk in writes_by_value:
            raise ValueError(f"key {key}: value {w.value!r} written twice (ops "
                             f"{writes_by_value[vk].id} and {w.id}); values must be unique")
        writes_by_value[vk] = w

    # -- read validity; learn the versions of writes only seen through reads
    effective: dict[int, int] = {w.id: w.version for w in writes if w.version is not None}
    observed: set[int] = set()
    for r in reads:
        if not r.found:
            continue
        w = writes_by_value.get(_vkey(r.value))
        if w is None:
            res.add("phantom_read", key, "a read returned a value no write in the history wrote",
                    r)
            continue
        observed.add(w.id)
        if w.outcome == "failed":
            res.add("read_of_failed_write", key,
                    "a read returned the value of a write that certainly failed", r, w)
        if r.end is not None and w.start > r.end:
            res.add("read_from_future", key, "a read returned a value written after it ended",
                    r, w)
        if r.version is not None:
            known = effective.get(w.id)
            if known is None:
                effective[w.id] = r.version
            elif known != r.version:
                res.add("version_mismatch", key, f"a read saw the write's value with version "
                        f"{r.version}, the write was given {known}", r, w)

    # -- write order: versions unique and agreeing with real time
    taken: dict[int, Op] = {}
    for w in writes:
        v = effective.get(w.id)
        if v is None or (w.outcome != "ok" and w.id not in observed and w.version is None):
            continue
        if v in taken:
            res.add("write_order", key, f"two writes share version {v}", taken[v], w)
        taken[v] = w
    acked = sorted((w for w in writes if w.outcome == "ok" and w.version is not None),
                   key=lambda w: w.end if w.end is not None else INF)
    ends = [w.end for w in acked]
    prefix_max: list[tuple[int, Op]] = []
    best: tuple[int, Op] | None = None
    for w in acked:
        if best is None or w.version > best[0]:  # type: ignore[operator]
            best = (w.version, w)  # type: ignore[assignment]
        prefix_max.append(best)  # type: ignore[arg-type]
    for w in acked:
        i = bisect.bisect_left(ends, w.start) - 1
        if i >= 0 and prefix_max[i][0] >= w.version:  # type: ignore[operator]
            res.add("write_order", key, "a write that began after another write was "
                    "acknowledged got a version that is not higher", prefix_max[i][1], w)

    # -- (b) fresh reads: no stale r=quorum / r=primary read
    def bound_before(t: float, b_ends: list[float],
                     b_max: list[tuple[int, Op]]) -> tuple[int, Op] | None:
        i = bisect.bisect_left(b_ends, t) - 1
        return b_max[i] if i >= 0 else None

    def prefix(ws: list[Op]) -> tuple[list[float], list[tuple[int, Op]]]:
        ws = sorted(ws, key=lambda w: w.end)  # type: ignore[arg-type, return-value]
        out: list[tuple[int, Op]] = []
        b: tuple[int, Op] | None = None
        for w in ws:
            if b is None or w.version > b[0]:  # type: ignore[operator]
                b = (w.version, w)  # type: ignore[assignment]
            out.append(b)  # type: ignore[arg-type]
        return [w.end for w in ws], out  # type: ignore[misc]

    quorum_acked = [w for w in acked if w.level == "quorum" and w.end is not None]
    all_acked = [w for w in acked if w.end is not None]
    q_ends, q_max = prefix(quorum_acked)
    a_ends, a_max = prefix(all_acked)
    for r in reads:
        if r.level not in READ_LEVELS_FRESH:
            continue
        strict = primary_stable and r.level == "primary"
        ends_, max_ = (a_ends, a_max) if strict else (q_ends, q_max)
        b = bound_before(r.start, ends_, max_)
        got = _read_version(r, writes_by_value, effective)
        if b is not None and (got is None or got < b[0]):
            if not r.found and _deleted_after(deletes, b[1], r.end_or_inf):
                continue
            what = "final read" if r.final else f"r={r.level} read"
            res.add("stale_read", key, f"a {what} returned version {got} although version "
                    f"{b[0]} was acknowledged before it started", r, b[1])

    # -- (c) token reads see the token's write or newer
    for r in reads:
        if r.token_of is None or r.level not in ("token",):
            continue
        w = by_id.get(r.token_of)
        if w is None or w.key != key or not _binding(w, primary_stable):
            continue
        got = _read_version(r, writes_by_value, effective)
        if got is None or got < w.version:  # type: ignore[operator]
            if not r.found and _deleted_after(deletes, w, r.end_or_inf):
                continue
            res.add("token_read_missed_write", key, f"a read with the token of version "
                    f"{w.version} returned version {got}", r, w)

    # -- (a) nothing acknowledged is lost at the end
    finals = [r for r in reads if r.final and r.level == "primary"]
    must = [w for w in acked if _binding(w, primary_stable)]
    if not finals:
        if must:
            res.add("no_final_read", key, "acknowledged writes but no ok final read", must[-1])
    else:
        last = max(finals, key=lambda r: r.start)
        got = _read_version(last, writes_by_value, effective) or 0
        for w in must:
            if w.version > got:  # type: ignore[operator]
                if not last.found and _deleted_after(deletes, w, last.end_or_inf):
                    continue
                res.add("lost_write", key, f"acknowledged w={w.level} write of version "
                        f"{w.version} is missing: the final read returned version {got}",
                        w, last)

    # -- a key deleted by an acknowledged delete does not come back
    for d in deletes:
        if d.outcome != "ok" or d.end is None or not (d.level == "quorum" or primary_stable):
            continue
        for r in reads:
            if not r.found or r.level not in READ_LEVELS_FRESH or r.start <= d.end:
                continue
            w = writes_by_value.get(_vkey(r.value))
            if w is not None and w.outcome == "ok" and w.end is not None and w.end < d.start:
                what = "final read" if r.final else f"r={r.level} read"
                res.add("deleted_key_read", key, f"a {what} returned a value written before "
                        "an acknowledged delete of the key", r, d, w)

    # -- r=one reads with max_lag: no older than max_lag (+ slack) before they started
    if primary_stable:
        for r in reads:
            if r.level != "one" or r.max_lag is None:
                continue
            b = bound_before(r.start - r.max_lag - lag_slack, a_ends, a_max)
            got = _read_version(r, writes_by_value, effective)
            if b is None or (got is not None and got >= b[0]):
                continue
            if not r.found and _deleted_after(deletes, b[1], r.end_or_inf):
                continue
            res.add("lagging_read", key, f"an r=one read with max_lag={r.max_lag:g} returned "
                    f"version {got} although version {b[0]} was acknowledged more than "
                    f"{r.max_lag + lag_slack:g}s before it started", r, b[1])

    # -- linearizability of r=primary reads with every write (no failover only)
    if primary_stable:
        if deletes:  # a not-found read cannot be placed without the delete's version
            reads = [r for r in reads if r.found]
        _check_linearizable(key, writes, reads, writes_by_value, effective, observed, res)


def _read_version(r: Op, writes_by_value: dict[str, Op], effective: dict[int, int]) -> int | None:
    """The version a read observed: 0 for not found; from the body, else from the write."""
    if not r.found:
        return 0
    if r.version is not None:
        return r.version
    w = writes_by_value.get(_vkey(r.value))
    return effective.get(w.id) if w is not None else None


def _check_linearizable(key: str, writes: list[Op], reads: list[Op],
                        writes_by_value: dict[str, Op], effective: dict[int, int],
                        observed: set[int], res: Result) -> None:
    clusters: dict[int, list[Op]] = defaultdict(list)
    for w in writes:
        v = effective.get(w.id)
        # a write that certainly happened, or one a read saw; others may be left out
        if v is None or w.outcome == "failed":
            continue
        if w.outcome == "ok" or w.id in observed:
            clusters[v].append(w)
    for r in reads:
        if r.level != "primary":
            continue
        v = _read_version(r, writes_by_value, effective)
        if v is None:
            continue
        clusters[v].append(r)
    order = sorted(clusters)
    # suffix minimum of end times over every later cluster
    suffix_min: list[tuple[float, Op | None]] = [(INF, None)] * (len(order) + 1)
    for i in range(len(order) - 1, -1, -1):
        m = suffix_min[i + 1]
        for o in clusters[order[i]]:
            if o.end_or_inf < m[0]:
                m = (o.end_or_inf, o)
        suffix_min[i] = m
    for i, v in enumerate(order):
        later_end, later_op = suffix_min[i + 1]
        for o in clusters[v]:
            if later_op is not None and o.start > later_end:
                res.add("not_linearizable", key, f"an operation on version {v} began after an "
                        f"operation on a later version had ended", o, later_op)
