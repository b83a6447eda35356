"""Bearer tokens with scopes ``read`` and ``write``.

Only SHA-256 digests are stored (tokens are long random strings, so a slow hash buys nothing).
Each worker caches lookups for KV_TOKEN_CACHE_TTL seconds, so a revoked token stops working
within that time (plus replication lag when a standby answers). A lookup asks the primary first
(kv.selection.token_lookup_order) through the read engine (kv.fanout): a primary that hangs is
hedged with a standby after a quarter of KV_READ_TIMEOUT, and the lookup gives up at
KV_READ_TIMEOUT (503).
"""

from __future__ import annotations

import hashlib
import threading
import time

from django.conf import settings
from django.db import OperationalError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission

SCOPES = ("read", "write")
_MAX_CACHE = 10000


class TokenUser:
    is_authenticated = True
    is_anonymous = False

    def __init__(self, name: str, scopes: frozenset[str]):
        self.name = name
        self.scopes = scopes

    def __str__(self) -> str:
        return self.name


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


_cache: dict[str, tuple[float, TokenUser | None]] = {}  # token -> (expiry, user or None)
_cache_lock = threading.Lock()


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def lookup(token: str) -> TokenUser | None:
    # keyed by the token itself: a hit costs no hashing (the process holds the token anyway,
    # in the request being served)
    now = time.monotonic()
    hit = _cache.get(token)
    if hit is not None and hit[0] > now:
        return hit[1]
    row = _fetch(token_digest(token))
    user = TokenUser(row[0], frozenset(s for s in row[1].split(",") if s)) if row else None
    with _cache_lock:
        if len(_cache) >= _MAX_CACHE:
            _cache.clear()
        _cache[token] = (now + settings.KV["TOKEN_CACHE_TTL"], user)
    return user


def _fetch(digest: str):
    """(name, scopes) of the token with SHA-256 ``digest``, or None: the primary first (last
    when it was found silent since the last probe), then the other nodes that may serve reads,
    each bounded by KV_READ_TIMEOUT as a whole."""
    from . import fanout, selection
    from .models import ApiToken
    from .nodes import CLUSTER
    from .reads import read_failed

    candidates = selection.token_lookup_order(CLUSTER.state())
    sql = f"SELECT name, scopes FROM {ApiToken._meta.db_table} WHERE token_sha256 = %s"
    answers, outcomes = fanout.gather(sql, [digest], candidates, 1, settings.KV["READ_TIMEOUT"],
                                      read_failed("token lookup"))
    if not answers:
        why = "; ".join(f"{name}: {text}" for name, text in outcomes.items())
        raise OperationalError(f"no node answered the token lookup ({why or 'none may serve'})")
    return answers[0][1]


class BearerTokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 512 or " " in token:
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <token>'")
        user = lookup(token)
        if user is None:
            raise exceptions.AuthenticationFailed("unknown or revoked token")
        request._request.kv_user = user.name
        return user, None

    def authenticate_header(self, request):
        return 'Bearer realm="kv"'


class HasScope(BasePermission):
    """``read`` for GET/HEAD/OPTIONS, ``write`` otherwise (a view may set ``required_scope``)."""

    message = "the token lacks the scope this request needs"

    def has_permission(self, request, view):
        user = request.user
        if user is None or not getattr(user, "is_authenticated", False):
            return False
        needed = getattr(view, "required_scope", None) or (
            "read" if request.method in SAFE_METHODS else "write")
        if needed not in user.scopes:
            self.message = f"the token lacks the '{needed}' scope"
            return False
        return True
