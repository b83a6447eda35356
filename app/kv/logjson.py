"""One JSON object per line with ECS field names (flat dotted keys, ``ecs.version`` 8.11).

Extra fields come from ``logger.info(msg, extra={"ecs": {"kv.node": "pg2", ...}})``.
Imports only the standard library, so gunicorn's master can use it too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import time
import traceback

_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)  # json.dumps builds one per call
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class EcsJsonFormatter(logging.Formatter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read once: the process's environment is set before logging is configured (gunicorn's
        # config sets KV_INSTANCE in the master, before the workers start).
        self._instance = os.environ.get("KV_INSTANCE", "")
        self._second: tuple[int, str] = (-1, "")  # one tuple: threads swap it whole

    def _timestamp(self, created: float) -> str:
        second = int(created)
        cached = self._second
        if cached[0] != second:  # one strftime per second, not per line
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "@timestamp": self._timestamp(record.created),
            "log.level": record.levelname.lower(),
            "message": record.getMessage(),
            "log.logger": record.name,
            "ecs.version": "8.11.0",
            "service.name": "kv",
            "process.pid": record.process,
        }
        if self._instance:
            doc["service.node.name"] = self._instance
        rid = request_id.get()
        if rid:
            doc["http.request.id"] = rid
        extra = getattr(record, "ecs", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            etype, evalue, _tb = record.exc_info
            doc["error.type"] = etype.__name__
            doc["error.message"] = str(evalue)
            doc["error.stack_trace"] = "".join(traceback.format_exception(*record.exc_info))
        return _ENCODER.encode(doc)
