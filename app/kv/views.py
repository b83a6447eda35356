"""HTTP endpoints of docs/api.md (the OpenAPI description is in kv.schema)."""

from __future__ import annotations

import functools
import json

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.views import APIView

from .consistency import (
    InvalidInput,
    check_value,
    parse_etag_list,
    parse_max_lag,
    parse_read_level,
    parse_session_token,
    parse_write_level,
    validate_key,
)
from .cursors import decode_cursor, encode_cursor, parse_limit
from .errors import method_not_allowed
from .nodes import CLUSTER
from .parsers import ValueTooLarge
from .public import is_public
from .reads import list_page, read
from .schema import (
    CLUSTER_PARAMS,
    COMMON_ERRORS,
    CREATE_PARAMS,
    DELETE_PARAMS,
    E400,
    E401,
    E403,
    E404,
    E409,
    E412,
    E413,
    E415,
    PUT_PARAMS,
    READ_PARAMS,
    create_body,
    list_params,
    put_body,
)
from .serializers import ClusterSerializer, ItemSerializer, PageSerializer
from .writes import encode_value, write


def _json(body: dict, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                        status=status, content_type="application/json")


def _error(status: int, code: str, detail: str, **extra) -> HttpResponse:
    return _json({"error": code, "detail": detail, **extra}, status)


def _item(key: str, value, version: int, status: int = 200, node: str | None = None,
          token: str | None = None) -> HttpResponse:
    resp = _json({"key": key, "value": value, "version": str(version)}, status)
    resp["ETag"] = f'"{version}"'
    if node:
        resp["X-KV-Node"] = node
    if token:
        resp["X-KV-Token"] = token
    return resp


def _body(request, fields: tuple[str, ...]) -> dict:
    data = request.data
    if not isinstance(data, dict) or set(data) != set(fields):
        raise InvalidInput("bad_json", f"the body must be a JSON object with exactly: "
                                       f"{', '.join(fields)}")
    return data


def _encode(value) -> str:
    check_value(value)
    encoded = encode_value(value)
    if len(encoded.encode("utf-8")) > settings.KV["MAX_VALUE_BYTES"]:
        raise ValueTooLarge(f"the value is larger than {settings.KV['MAX_VALUE_BYTES']} bytes "
                            "once encoded")
    return encoded


def _conditions(request, allow_none_match: bool) -> tuple[str, list[int]]:
    if_match = request.META.get("HTTP_IF_MATCH")
    if_none = request.META.get("HTTP_IF_NONE_MATCH")
    if if_none is not None and (not allow_none_match or if_none.strip() != "*"):
        raise InvalidInput("bad_precondition", "only 'If-None-Match: *' is supported, on PUT")
    if if_match is not None:
        versions = parse_etag_list(if_match)
        if if_none is not None:
            # RFC 9110 13.2.2: If-None-Match is evaluated only when If-Match holds, i.e. when
            # the key exists, so "If-None-Match: *" then fails: 412 whatever the key holds.
            return "match", []
        return ("match_any", []) if versions is None else ("match", versions)
    if if_none is not None:
        return "none_match", []
    return "none", []


class KeyView(APIView):
    """One key: read, create or replace, delete."""

    @extend_schema(operation_id="kv_get", parameters=READ_PARAMS,
                   responses={200: ItemSerializer, 404: E404, **COMMON_ERRORS})
    def get(self, request, key):
        key = validate_key(key)
        token_header = request.META.get("HTTP_X_KV_TOKEN")
        level = parse_read_level(request.GET.get("r"))
        max_lag = parse_max_lag(request.GET.get("max_lag"), settings.KV["MAX_LAG"])
        # a session token is a lower bound on top of the level, never instead of it
        after_lsn = parse_session_token(token_header)[1] if token_header else None
        res = read(key, level, max_lag, after_lsn)
        request._request.kv_log.update({"kv.level": level, "kv.node": res.node})
        if not res.found:
            resp = _error(404, "not_found", "no such key")
        else:
            resp = _item(key, res.value, res.version)
        if res.node:
            resp["X-KV-Node"] = res.node
        return resp

    @extend_schema(operation_id="kv_put", parameters=PUT_PARAMS,
                   request={"application/json": put_body()},
                   responses={200: OpenApiResponse(ItemSerializer, description="replaced"),
                              201: OpenApiResponse(ItemSerializer, description="created"),
                              412: E412, 413: E413, 415: E415, **COMMON_ERRORS})
    def put(self, request, key):
        key = validate_key(key)
        level = parse_write_level(request.GET.get("w"))
        cond, versions = _conditions(request, allow_none_match=True)
        value = _body(request, ("value",))["value"]
        res = write("put", key, _encode(value), cond, versions, level)
        request._request.kv_log.update({"kv.level": level, "kv.node": res.node})
        if res.status == "precondition_failed":
            return _error(412, "precondition_failed", "the key's current version does not "
                                                      "match the request's condition")
        return _item(key, value, res.version, 201 if res.created else 200, res.node,
                     res.session_token)

    @extend_schema(operation_id="kv_delete", parameters=DELETE_PARAMS, request=None,
                   responses={204: OpenApiResponse(description="deleted"), 404: E404,
                              412: E412, **COMMON_ERRORS})
    def delete(self, request, key):
        key = validate_key(key)
        level = parse_write_level(request.GET.get("w"))
        cond, versions = _conditions(request, allow_none_match=False)
        res = write("delete", key, None, cond, versions, level)
        request._request.kv_log.update({"kv.level": level, "kv.node": res.node})
        if res.status == "not_found":
            return _error(404, "not_found", "no such key")
        if res.status == "precondition_failed":
            return _error(412, "precondition_failed", "the key's current version does not "
                                                      "match If-Match")
        resp = HttpResponse(status=204)
        if res.session_token:
            resp["X-KV-Token"] = res.session_token
        return resp


class CollectionView(APIView):
    """Create a key (POST with key and value in the body) or list keys by prefix."""

    @extend_schema(operation_id="kv_create", parameters=CREATE_PARAMS,
                   request={"application/json": create_body()},
                   responses={201: ItemSerializer, 409: E409, 413: E413, 415: E415,
                              **COMMON_ERRORS})
    def post(self, request):
        level = parse_write_level(request.GET.get("w"))
        data = _body(request, ("key", "value"))
        key = validate_key(data["key"])
        res = write("put", key, _encode(data["value"]), "create", [], level)
        request._request.kv_log.update({"kv.level": level, "kv.node": res.node})
        if res.status == "exists":
            return _error(409, "exists", "the key exists; use PUT to replace it")
        resp = _item(key, data["value"], res.version, 201, res.node, res.session_token)
        return resp

    @extend_schema(operation_id="kv_list", parameters=list_params(),
                   responses={200: PageSerializer, **COMMON_ERRORS})
    def get(self, request):
        prefix = request.GET.get("prefix", "")
        if prefix:
            validate_key(prefix)
        limit = parse_limit(request.GET.get("limit"), settings.KV["LIST_DEFAULT_LIMIT"],
                            settings.KV["LIST_MAX_LIMIT"])
        cursor = request.GET.get("cursor")
        after = decode_cursor(cursor, prefix) if cursor else None
        level = parse_read_level(request.GET.get("r"))
        max_lag = parse_max_lag(request.GET.get("max_lag"), settings.KV["MAX_LAG"])
        rows, last, node = list_page(level, prefix, after, limit, max_lag)
        request._request.kv_log.update({"kv.level": level, "kv.node": node})
        return _page(rows, last, prefix)


def _page(rows, last: str | None, prefix: str) -> HttpResponse:
    return _json({
        "items": [{"key": r[0], "value": r[1], "version": str(r[2])} for r in rows],
        "next": encode_cursor(last, prefix) if last is not None else None,
    })


class ClusterView(APIView):
    """Nodes, roles, timelines, replay positions, lag, health; k, W, R."""

    @extend_schema(operation_id="cluster", parameters=CLUSTER_PARAMS,
                   responses={200: ClusterSerializer, 400: E400, 401: E401, 403: E403})
    def get(self, request):
        fresh = request.GET.get("fresh")
        if fresh not in (None, "0", "1", "false", "true"):
            raise InvalidInput("bad_request", "fresh must be one of 0, 1, false, true")
        fresh = fresh in ("1", "true")
        body = CLUSTER.state(max_age=0 if fresh else None).public()
        body["instance"] = settings.KV["INSTANCE"]
        return _json(body)


_SAFE = ("GET", "HEAD", "OPTIONS")


def _safe_methods(view):
    """GET and HEAD answer, OPTIONS lists them, anything else is a JSON 405 with Allow (before
    Django's CSRF check, which would answer an HTML 403)."""

    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method not in _SAFE:
            return method_not_allowed(_SAFE)
        if request.method == "OPTIONS":
            resp = HttpResponse(status=200)
            resp["Allow"] = ", ".join(_SAFE)
            return resp
        return view(request, *args, **kwargs)

    return wrapper


@_safe_methods
def healthz(request):
    """The process is up (no database contact)."""
    return JsonResponse({"status": "ok", "instance": settings.KV["INSTANCE"]})


@_safe_methods
def readyz(request):
    """A write quorum and a read quorum are reachable (the reasons only on the internal
    listener: kv.public)."""
    state = CLUSTER.state()
    reasons = []
    if state.primary is None:
        reasons.append("no primary is reachable")
    elif not state.write_quorum_ok():
        reasons.append(f"{state.sync_streaming} synchronous standbys streaming, "
                       f"{state.quorum.k} needed for a write quorum")
    if not state.read_quorum_ok():
        reasons.append(f"{len(state.eligible())} nodes can serve reads, "
                       f"{state.quorum.r} needed for a read quorum")
    if state.config_error is not None:
        reasons.append(f"quorum requests are refused: {state.config_error}")
    if is_public(request):
        if reasons:
            return JsonResponse({"ready": False, "error": "not_ready",
                                 "detail": "the service is not ready"}, status=503)
        return JsonResponse({"ready": True})
    body = {"ready": not reasons, "primary": state.primary, "w": state.quorum.w,
            "r": state.quorum.r}
    if reasons:
        return JsonResponse({"error": "not_ready", "detail": "; ".join(reasons), **body},
                            status=503)
    return JsonResponse(body)
