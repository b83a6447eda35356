"""WSGI entry point: gunicorn serves ``kvsite.wsgi:application``."""

import json
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kvsite.settings")


class RejectInvalidUtf8Path:
    """Refuse a path that is not UTF-8 before Django sees it.

    WSGI hands the path over as bytes decoded as latin-1, and Django re-percent-encodes broken
    UTF-8 instead of refusing it, so ``/api/kv/%FF`` would silently become the key ``"%FF"``.
    """

    def __init__(self, app):
        self.app = app
        self.instance = os.environ.get("KV_INSTANCE", "")

    def __call__(self, environ, start_response):
        try:
            environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        except UnicodeError:
            body = json.dumps({"error": "bad_key", "detail": "the path is not valid UTF-8"})
            start_response("400 Bad Request", [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body))),
                                               ("X-KV-Instance", self.instance)])
            return [body.encode()]
        return self.app(environ, start_response)


application = RejectInvalidUtf8Path(get_wsgi_application())
