"""Histories and what they say about failovers: RTO, split-brain writes, lost
acknowledged writes, undocumented failures, two primaries at once.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

# The app's documented 503 error codes of a write (docs/api.md, "Errors"; app/README.md).
DOCUMENTED_503 = ("quorum_unavailable", "database_unavailable")


def timeline_of(version: int) -> int:
    """The PostgreSQL timeline in a version (``timeline << 40 | counter``, app/kv/consistency)."""
    return int(version) >> 40


def rto_seconds(history: list[dict], at: float, timeline: int) -> float | None:
    """Seconds from ``at`` (the primary taken away, on ``timeline``) to the end of the first
    ``w=quorum`` write acknowledged on a later timeline, i.e. by a new primary; None if none."""
    ends = [o["end"] for o in history
            if o["op"] == "write" and o["level"] == "quorum" and o["outcome"] == "ok"
            and o.get("end") is not None and o.get("version") is not None
            and o["end"] >= at and timeline_of(o["version"]) > timeline]
    return round(min(ends) - at, 3) if ends else None


def median(values: list[float]) -> float | None:
    """The median (the mean of the two middle values for an even count); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def rto_figures(history: list[dict], kills: list[dict]) -> dict:
    """Per kill (``{"at", "timeline", "victim"}``): its RTO; their median and maximum. A kill
    with no new primary's quorum write after it has RTO None and counts as missing."""
    rtos = [rto_seconds(history, k["at"], k["timeline"]) for k in kills]
    got = [r for r in rtos if r is not None]
    return {"rtos": rtos, "missing": len(rtos) - len(got),
            "median": None if not got else round(median(got), 3),
            "max": max(got) if got else None}


def split_brain_writes(history: list[dict]) -> list[dict]:
    """Writes acknowledged by a stale primary: an ok write (any level) on a timeline below the
    timeline of an ok write that had already been acknowledged when it began. Once a new
    primary has acknowledged a write, no client may get an acknowledgement from the old one."""
    acked = sorted((o for o in history if o["op"] == "write" and o["outcome"] == "ok"
                    and o.get("version") is not None and o.get("end") is not None),
                   key=lambda o: o["end"])
    newest: list[int] = []  # the highest timeline acknowledged up to each end
    for o in acked:
        newest.append(max(timeline_of(o["version"]), newest[-1] if newest else 0))
    ends = [o["end"] for o in acked]
    out = []
    for o in acked:
        i = bisect.bisect_left(ends, o["start"])  # acknowledged strictly before o began
        if i and newest[i - 1] > timeline_of(o["version"]):
            out.append(o)
    return out


def missing_acknowledged(history: list[dict], select: Callable[[dict], bool]) -> list[dict]:
    """The selected ok writes whose key's final read returned an older version (or no ok final
    read at all): acknowledged, then lost."""
    final: dict[str, int] = {}
    for o in history:
        if o["op"] == "read" and o.get("final") and o["outcome"] == "ok":
            final[o["key"]] = max(final.get(o["key"], 0), int(o.get("version") or 0))
    return [o for o in history
            if o["op"] == "write" and o["outcome"] == "ok" and select(o)
            and (o["key"] not in final or final[o["key"]] < int(o["version"]))]


def undocumented_write_failures(history: list[dict], level: str = "quorum") -> list[dict]:
    """Writes at ``level`` that did not succeed and were not answered with one of the app's
    documented 503s (a timeout, a cut connection, a 502/504 from the balancer, a 500)."""
    return [o for o in history
            if o["op"] == "write" and o["level"] == level and not o.get("final")
            and o["outcome"] != "ok"
            and not (o.get("status") == 503
                     and str(o.get("error", "")).split(" ")[0] in DOCUMENTED_503)]


def two_primaries(samples: list[dict]) -> list[dict]:
    """Samples (``{"t", "nodes": {node: state}}``, states from :func:`pg_state`) in which more
    than one node ran as a primary."""
    return [s for s in samples if sum(1 for v in s["nodes"].values() if v == "primary") > 1]


