"""Quorum arithmetic, versions, LSNs, session tokens, consistency levels, keys and values (list
cursors: kv.cursors).

Pure functions only: the tests call them without a database.

Versions
--------
A version is a positive 63-bit integer ``timeline << 40 | counter``. ``timeline`` is the
PostgreSQL timeline of the primary that made the write (read from ``pg_walfile_name`` at write
time); ``counter`` comes from one sequence, so it increases with every write on a timeline.
A promotion starts a new, higher timeline, so every write made after a failover has a higher
version than every write made before it, including writes that an unfenced old primary kept
accepting on its abandoned timeline. Versions are therefore totally ordered across failovers and
unique as long as one timeline has one writer. The API shows them as decimal strings (JSON numbers
lose precision above 2**53); compare them as integers.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

TIMELINE_SHIFT = 40
COUNTER_MASK = (1 << TIMELINE_SHIFT) - 1
MAX_VERSION = (1 << 63) - 1  # PostgreSQL bigint, the column's type
MAX_KEY_BYTES = 512

READ_LEVELS = ("quorum", "primary", "one")
WRITE_LEVELS = ("quorum", "one")


class InvalidInput(ValueError):
    """A client error; ``code`` is the API's error code."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


# ---------------------------------------------------------------- quorum arithmetic


@dataclass(frozen=True)
class Quorum:
    n: int  # nodes
    k: int  # standbys that must apply a quorum write (ANY k)
    w: int  # nodes holding an acknowledged quorum write: primary + k
    r: int  # nodes a quorum read asks: N - W + 1


def quorum_sizes(n: int, k: int) -> Quorum:
    """W = k + 1 (primary plus k standbys), R = N - W + 1, so that R + W > N."""
    if n < 1:
        raise ValueError("at least one node")
    k = max(0, min(k, n - 1))
    w = k + 1
    return Quorum(n=n, k=k, w=w, r=n - w + 1)


_SSN_RE = re.compile(
    r"^\s*(?:(?P<method>ANY|FIRST)\s+)?(?P<num>\d+)\s*\((?P<list>.*)\)\s*$", re.IGNORECASE | re.S
)


def parse_sync_standby_names(value: str) -> tuple[int, list[str]]:
    """Return (k, names) from ``synchronous_standby_names``.

    ``''`` -> (0, []) (no synchronous replication); ``'ANY 2 (a, "b")'`` -> (2, ['a', 'b']);
    ``'a, b'`` -> (1, ['a', 'b']) (PostgreSQL's old syntax means FIRST 1).
    """
    value = (value or "").strip()
    if not value:
        return 0, []
    m = _SSN_RE.match(value)
    if m:
        k = int(m.group("num"))
        names_part = m.group("list")
    else:
        k = 1
        names_part = value
    names = [n.strip().strip('"') for n in names_part.split(",") if n.strip()]
    return k, names


# ---------------------------------------------------------------- versions and LSNs


def make_version(timeline: int, counter: int) -> int:
    if timeline < 1 or counter < 0 or counter > COUNTER_MASK:
        raise ValueError("version out of range")
    return (timeline << TIMELINE_SHIFT) | counter


def split_version(version: int) -> tuple[int, int]:
    return version >> TIMELINE_SHIFT, version & COUNTER_MASK


def newest(answers: list[tuple[int, object] | None]) -> tuple[int, object] | None:
    """Highest version wins; ``None`` (no row on that node) loses against any version."""
    best = None
    for a in answers:
        if a is not None and (best is None or a[0] > best[0]):
            best = a
    return best


_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str | None) -> int | None:
    if text is None:
        return None
    m = _LSN_RE.match(text)
    if not m:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


# ---------------------------------------------------------------- session tokens

_TOKEN_RE = re.compile(r"^(\d{1,10})-([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})$")


def format_session_token(timeline: int, lsn: int) -> str:
    """``X-KV-Token``: the primary's timeline and its WAL position after the commit."""
    return f"{timeline}-{format_lsn(lsn)}"


def parse_session_token(text: str) -> tuple[int, int]:
    m = _TOKEN_RE.match(text.strip())
    if not m:
        raise InvalidInput("bad_token", "X-KV-Token is not a token this service issued")
    return int(m.group(1)), parse_lsn(m.group(2))  # type: ignore[return-value]


# ---------------------------------------------------------------- consistency levels


def parse_read_level(value: str | None) -> str:
    """Absent: quorum. Present, it must be a level: ``r=`` is refused like any unknown value
    (the OpenAPI schema declares an enum, and a default only for the absent parameter)."""
    level = "quorum" if value is None else value
    if level not in READ_LEVELS:
        raise InvalidInput("bad_consistency", f"r must be one of {', '.join(READ_LEVELS)}")
    return level


def parse_write_level(value: str | None) -> str:
    level = "quorum" if value is None else value
    if level not in WRITE_LEVELS:
        raise InvalidInput("bad_consistency", f"w must be one of {', '.join(WRITE_LEVELS)}")
    return level


_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,3})?")


def parse_max_lag(value: str | None, default: float) -> float:
    """A JSON number from 0 to 86400 (not Python's wider float(): no ``1_0``, ``inf``, spaces)."""
    if value is None:
        return default
    lag = float(value) if _NUMBER_RE.fullmatch(value) else -1.0
    if not 0 <= lag <= 86400:
        raise InvalidInput("bad_max_lag", "max_lag must be a number of seconds from 0 to 86400")
    return lag


# ---------------------------------------------------------------- keys, values, conditions


def validate_key(key: object) -> str:
    """1 to 512 bytes of UTF-8, no control characters (Unicode category Cc)."""
    if not isinstance(key, str):
        raise InvalidInput("bad_key", "the key must be a string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("bad_key", "the key is not valid UTF-8") from None
    if size == 0:
        raise InvalidInput("bad_key", "the key is empty")
    if size > MAX_KEY_BYTES:
        raise InvalidInput("bad_key", f"the key is longer than {MAX_KEY_BYTES} bytes")
    if any(unicodedata.category(c) == "Cc" for c in key):
        raise InvalidInput("bad_key", "the key contains control characters")
    return key


def check_value(value: object, depth: int = 0) -> None:
    """Refuse what PostgreSQL's jsonb cannot store: NUL in strings, lone surrogates."""
    if depth > 200:
        raise InvalidInput("bad_json", "the value is nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput("bad_json", "strings in the value cannot contain \\u0000")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("bad_json", "the value contains a lone surrogate") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_value(k, depth + 1)
            check_value(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_value(v, depth + 1)
    elif isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        raise InvalidInput("bad_json", "numbers must be finite")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def loads_strict(raw: bytes) -> object:
    """Parse a request body: strict UTF-8 JSON, no NaN/Infinity, no absurd nesting."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("bad_json", "the body is not valid UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidInput("bad_json", "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, int too large to convert, NaN
        raise InvalidInput("bad_json", f"the body is not valid JSON: {exc}") from None


def parse_etag_list(header: str) -> list[int] | None:
    """Parse ``If-Match``: ``"12", W/"13"`` -> [12, 13]; ``*`` -> None (any current version).

    Tags that are not a version, including numbers outside PostgreSQL's bigint (where no
    version can be), are returned as -1: they match no version (412) rather than being
    refused, and never reach the database as a value it would reject.
    """
    header = header.strip()
    if header == "*":
        return None
    out: list[int] = []
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        tag = tag.strip('"')
        version = int(tag) if re.fullmatch(r"[0-9]{1,19}", tag) else -1
        out.append(version if version <= MAX_VERSION else -1)
    return out
