"""One JSON object per line with ECS field names (flat dotted keys, ``ecs.version`` 8.11).

Extra fields come from ``logger.info(msg, extra={"ecs": {"kv.node": "pg2", ...}})``.
Imports only the standard library, so gunicorn's master can use it too.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import os
import traceback

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def _instance() -> str:
    return os.environ.get("KV_INSTANCE", "")


class EcsJsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        doc: dict[str, object] = {
            "@timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "log.level": record.levelname.lower(),
            "message": record.getMessage(),
            "log.logger": record.name,
            "ecs.version": "8.11.0",
            "service.name": "kv",
            "process.pid": record.process,
        }
        instance = _instance()
        if instance:
            doc["service.node.name"] = instance
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
        return json.dumps(doc, ensure_ascii=False, default=str)
