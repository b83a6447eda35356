"""Request id, X-KV-Instance, an ECS access log line (every request, or every write and the
failed and slow reads: KV_ACCESS_LOG), JSON for stray errors."""

from __future__ import annotations

import logging
import os
import re
import time

from django.conf import settings
from django.http import JsonResponse

from .errors import classify, json_error
from .logjson import request_id

access_log = logging.getLogger("kv.access")
error_log = logging.getLogger("kv.errors")
_RID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_READS = frozenset(("GET", "HEAD", "OPTIONS"))


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.instance = settings.KV["INSTANCE"]
        self.access = settings.KV["ACCESS_LOG"]
        # "writes": every write (an audit trail with the token's name, which nginx does not
        # know), and a read only when answered 4xx/5xx (a quorum failure is a 503) or slower
        # than this; nginx logs every request with the same request id
        self.every = self.access is True
        self.slow_ns = int(settings.KV.get("ACCESS_LOG_SLOW", 0.5) * 1e9)

    def __call__(self, request):
        started = time.perf_counter_ns()
        rid = request.META.get("HTTP_X_REQUEST_ID", "")
        if not _RID_RE.match(rid):
            rid = os.urandom(16).hex()  # 32 hex digits, as a UUID's hex, without the object
        reset = request_id.set(rid)
        request.kv_log = {}
        try:
            response = self.get_response(request)
            response["X-KV-Instance"] = self.instance
            response["X-Request-ID"] = rid
            if self.access:
                took = time.perf_counter_ns() - started
                if (self.every or request.method not in _READS or response.status_code >= 400
                        or took >= self.slow_ns):
                    self._log(request, response, took)
            return response
        finally:
            request_id.reset(reset)

    def process_exception(self, request, exception):
        found = classify(exception)
        if found is not None:
            status, body = found
            return JsonResponse(body, status=status)
        error_log.error("unhandled exception", exc_info=exception,
                        extra={"ecs": {"url.path": request.path}})
        return json_error(500, "internal_error", "a bug: the error was logged")

    def _log(self, request, response, duration_ns: int) -> None:
        status = response.status_code
        level = logging.ERROR if status >= 500 else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        meta = request.META
        fields = {
            "event.dataset": "kv.access",
            "event.duration": duration_ns,
            "http.request.method": request.method,
            "url.path": request.path,
            "http.response.status_code": status,
            "source.ip": meta.get("REMOTE_ADDR", ""),
        }
        xff = meta.get("HTTP_X_FORWARDED_FOR")
        fields["client.ip"] = xff.split(",")[0].strip() if xff else fields["source.ip"]
        if meta.get("QUERY_STRING"):
            fields["url.query"] = meta["QUERY_STRING"][:1000]
        if meta.get("HTTP_USER_AGENT"):
            fields["user_agent.original"] = meta["HTTP_USER_AGENT"][:300]
        user = getattr(request, "kv_user", None)
        if user:
            fields["user.name"] = user
        if not response.streaming:
            fields["http.response.body.bytes"] = len(response.content)
        fields.update(request.kv_log)
        # makeRecord + handle is what Logger.log does, less the walk up the stack for the
        # caller's file and line, which the JSON line does not carry
        access_log.handle(access_log.makeRecord(
            access_log.name, level, __file__, 0, "%s %s %s",
            (request.method, request.path, status), None, extra={"ecs": fields}))
