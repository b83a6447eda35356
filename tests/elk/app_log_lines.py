"""Print log lines exactly as the app writes them, one JSON object per line.

Runs the app's own code: its logging configuration's formatter (kvsite.settings LOGGING, i.e.
kv.logjson.EcsJsonFormatter) and its request middleware (kv.middleware), which writes the access
line of every request. Needs a Python that has the app's requirements (Django, DRF):

    PYTHONPATH=app app/.venv/bin/python -m tests.elk.app_log_lines [--formatter-only]

(from the repository's root: the app's ``kv`` package comes from app/, this one from tests/).

--formatter-only uses the formatter alone (standard library only) for a request-scoped line.
No database is used: the middleware wraps a view stub that answers like the KV views do.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"


def formatter_only() -> list[str]:
    from kv import logjson
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logjson.EcsJsonFormatter())
    log = logging.getLogger("kv.elk-fixture")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    token = logjson.request_id.set("4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e")
    try:
        log.warning("quorum read fell back to the primary", extra={"ecs": {"kv.node": "pg2"}})
    finally:
        logjson.request_id.reset(token)
    log.info("worker booted")
    return stream.getvalue().splitlines()


def through_middleware() -> list[str]:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="elk-fixture-only",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["rest_framework", "kv"],
        DATABASES={},
        USE_TZ=True,
        KV={"INSTANCE": "app1:8000", "ACCESS_LOG": True},
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.http import HttpResponse, JsonResponse
    from django.test import RequestFactory
    from kv.middleware import RequestContextMiddleware

    # The formatter the app's settings name, built the way logging.config builds it.
    settings_src = (APP / "kvsite" / "settings.py").read_text()
    formatter_path = "kv.logjson.EcsJsonFormatter"
    if formatter_path not in settings_src:
        raise SystemExit(f"kvsite/settings.py no longer names {formatter_path}: update this script")
    module_name, _, class_name = formatter_path.rpartition(".")
    formatter = getattr(__import__(module_name, fromlist=[class_name]), class_name)()

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)

    def view(request):
        if request.method == "PUT":
            return JsonResponse({"key": "k1", "version": 3}, status=201)
        if request.path.endswith("/missing"):
            return JsonResponse({"error": "not_found", "detail": "no such key"}, status=404)
        logging.getLogger("kv.quorum").info("read from 2 nodes", extra={"ecs": {"kv.nodes": 2}})
        return HttpResponse(b'{"value": "v"}', status=200, content_type="application/json")

    middleware = RequestContextMiddleware(view)
    rf = RequestFactory()
    middleware(
        rf.put(
            "/kv/k1?consistency=quorum",
            b'{"value": "v"}',
            content_type="application/json",
            HTTP_X_REQUEST_ID="9b2e6c1d0a4f4e8e9f1a2b3c4d5e6f70",
            HTTP_USER_AGENT="wrk/4.2",
            REMOTE_ADDR="172.30.99.11",
        )
    )
    middleware(rf.get("/kv/k1", HTTP_X_FORWARDED_FOR="198.51.100.7", REMOTE_ADDR="172.30.99.11"))
    middleware(rf.get("/kv/missing", REMOTE_ADDR="172.30.99.11"))
    return stream.getvalue().splitlines()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formatter-only", action="store_true")
    args = parser.parse_args()
    lines = formatter_only() if args.formatter_only else through_middleware()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
