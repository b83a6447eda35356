"""Every error is JSON ``{"error": code, "detail": sentence}``; database trouble is a 503."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, Error
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

from .consistency import InvalidInput
from .outcomes import QuorumUnavailable
from .parsers import ValueTooLarge
from .public import is_public, redact_body

log = logging.getLogger("kv.errors")

_DRF_CODES = [
    (exceptions.ParseError, "bad_json"),
    (exceptions.NotAuthenticated, "unauthorized"),
    (exceptions.AuthenticationFailed, "unauthorized"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "rate_limited"),
    (exceptions.ValidationError, "bad_request"),
]


def error_body(code: str, detail: str, **extra) -> dict:
    return {"error": code, "detail": detail, **extra}


def _text(detail) -> str:
    if isinstance(detail, list | tuple):
        return "; ".join(_text(d) for d in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in detail.items())
    return str(detail)


def classify(exc: BaseException) -> tuple[int, dict] | None:
    """Status and body for an exception, or None if it is a bug (500)."""
    if isinstance(exc, InvalidInput):
        return 400, error_body(exc.code, exc.detail)
    if isinstance(exc, ValueTooLarge | RequestDataTooBig):
        return 413, error_body("value_too_large", str(exc) or "the body is too large")
    if isinstance(exc, QuorumUnavailable):
        return 503, exc.body()
    if isinstance(exc, exceptions.APIException):
        for cls, code in _DRF_CODES:
            if isinstance(exc, cls):
                return exc.status_code, error_body(code, _text(exc.detail))
        return exc.status_code, error_body("error", _text(exc.detail))
    if isinstance(exc, Http404):
        return 404, error_body("not_found", "no such resource")
    if isinstance(exc, PermissionDenied):
        return 403, error_body("forbidden", "permission denied")
    if isinstance(exc, SuspiciousOperation):
        return 400, error_body("bad_request", "the request was refused")
    if isinstance(exc, DatabaseError | Error):
        log.warning("database error: %s", exc, extra={"ecs": {"error.type": type(exc).__name__}})
        return 503, error_body("database_unavailable",
                               "the database did not answer; retry later")
    return None


def exception_handler(exc, context):
    found = classify(exc)
    if found is None:
        return None  # re-raised by DRF; kv.middleware turns it into a logged JSON 500
    status, body = found
    if status >= 500 and is_public(context.get("request")):
        body = redact_body(body)
    response = Response(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="kv"'
    if isinstance(exc, exceptions.Throttled) and exc.wait:
        response["Retry-After"] = str(int(exc.wait))
    return response


def json_error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse(error_body(code, detail), status=status)


def bad_request(request, exception=None):
    return json_error(400, "bad_request", "the request was refused")


def permission_denied(request, exception=None):
    return json_error(403, "forbidden", "permission denied")


def page_not_found(request, exception=None):
    return json_error(404, "not_found", "no such resource")


def csrf_failure(request, reason=""):
    """settings.CSRF_FAILURE_VIEW: Django's CSRF refusal as JSON (the API itself uses no cookies;
    only plain Django views such as /metrics are checked)."""
    return json_error(403, "forbidden", "the request was refused (CSRF check)")


def method_not_allowed(allowed: tuple[str, ...]) -> JsonResponse:
    resp = json_error(405, "method_not_allowed", "this method is not allowed here")
    resp["Allow"] = ", ".join(allowed)
    return resp


def server_error(request):
    return json_error(500, "internal_error", "a bug: the error was logged")
