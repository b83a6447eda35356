"""The benchmark's true ceiling: a minimal Django project (one module: settings, URL and view).

One view doing the same primary-key lookup as every read of the API, with a cursor, on the
primary; no middleware, no installed apps, persistent connections (CONN_MAX_AGE=None). Served by
the app's own gunicorn next to the app (app/bench.sh):

    DJANGO_SETTINGS_MODULE=minimal_site gunicorn --chdir bench/minimal -k sync -w 4 \
        minimal_site:application

Benchmark-only code: it never ships with the app. The database comes from the app's variables
(KV_DB_NODES: the first node, the primary of the bench's cluster; KV_DB_NAME/USER/PASSWORD).
"""

import json
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.http import JsonResponse
from django.urls import path

_host, _, _port = os.environ["KV_DB_NODES"].split(",")[0].split("=", 1)[1].rpartition(":")
settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "minimal-bench-only"),
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    USE_TZ=True,
    DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("KV_DB_NAME", "kv"),
        "USER": os.environ.get("KV_DB_USER", "kv"),
        "PASSWORD": os.environ.get("KV_DB_PASSWORD", ""),
        "HOST": _host.strip("[]"),
        "PORT": _port,
        "CONN_MAX_AGE": None,
    }},
)

SQL = "SELECT value, version, deleted FROM kv_item WHERE key = %s"


def get(request, key):
    with connection.cursor() as cur:
        cur.execute(SQL, [key])
        row = cur.fetchone()
    if row is None or row[2]:
        return JsonResponse({"error": "not_found", "detail": "no such key"}, status=404)
    value = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    return JsonResponse({"key": key, "value": value, "version": str(row[1])})


urlpatterns = [path("min/<str:key>", get)]
application = get_wsgi_application()
