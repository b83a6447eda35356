"""Listing pages: the ``limit`` parameter and the signed cursors that carry a listing on from
one page to the next (pure functions: the tests call them without a database).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from .consistency import InvalidInput, validate_key

# A cursor is ``<body>:<signature>``: body is the unpadded URL-safe base64 of the ASCII JSON
# ``{"a": last key, "p": prefix}``, signature the HMAC-SHA256 of the body keyed from SECRET_KEY
# with its own salt (django.core.signing).
# Only cursors the service issued pass, and what a signed cursor holds is validated again (a key
# of its listing), so that nothing a client sends as a cursor ever reaches a database.
CURSOR_SALT = "kv.list-cursor"
MAX_CURSOR_CHARS = 4096


def _cursor_signer():
    from django.core import signing

    return signing.Signer(salt=CURSOR_SALT, algorithm="sha256")


def encode_cursor(last_key: str, prefix: str) -> str:
    raw = json.dumps({"a": last_key, "p": prefix}, separators=(",", ":"))
    body = base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")
    return _cursor_signer().sign(body)


def decode_cursor(cursor: str, prefix: str) -> str:
    """Return the key after which the next page starts; 400 ``bad_cursor`` unless the service
    issued the cursor for a listing of ``prefix``."""
    from django.core import signing

    bad = InvalidInput("bad_cursor", "the cursor is not one this service issued")
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise bad
    try:
        body = _cursor_signer().unsign(cursor)
    except signing.BadSignature:
        raise bad from None
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = json.loads(raw.decode("utf-8"))
        after, cprefix = data["a"], data["p"]
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
        raise bad from None
    if not isinstance(after, str) or not isinstance(cprefix, str):
        raise bad
    if cprefix != prefix:
        raise InvalidInput("bad_cursor", "the cursor belongs to a listing with another prefix")
    try:
        validate_key(after)
        if cprefix:
            validate_key(cprefix)
    except InvalidInput:
        raise bad from None
    if not after.startswith(cprefix):
        raise bad
    return after


def parse_limit(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", value) or not 1 <= int(value) <= maximum:
        raise InvalidInput("bad_limit", f"limit must be an integer from 1 to {maximum}")
    return int(value)
