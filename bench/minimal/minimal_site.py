"""The benchmark's true ceiling: a minimal Django project (one module: settings, URL and view).

One view: GET does the same primary-key lookup as every read of the API, with a cursor, on the
primary; PUT makes the same statements as a quorum write of the API (``kv_write`` in a
transaction, then COMMIT and the session token's WAL position in one round trip: kv.writes), so
that its ratio to the GET is what this design allows a quorum write at best. No middleware, no
installed apps, no authentication, persistent connections (CONN_MAX_AGE=None). Served by the
app's own gunicorn next to the app (app/bench.sh, bench/benchmark.yml):

    DJANGO_SETTINGS_MODULE=minimal_site gunicorn --chdir bench/minimal -k sync -w 4 \
        minimal_site:application

Benchmark-only code: it never ships with the app. The database comes from the app's variables
(KV_DB_NODES: every node, and libpq picks the primary, target_session_attrs=read-write;
KV_DB_NAME/USER/PASSWORD, and the app's TLS settings).
"""

import json
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.http import JsonResponse
from django.urls import path

_nodes = [n.split("=", 1)[1].rpartition(":") for n in os.environ["KV_DB_NODES"].split(",")]
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
        "HOST": ",".join(host.strip("[]") for host, _, _ in _nodes),
        "PORT": ",".join(port for _, _, port in _nodes),
        # TLS as the app connects (KV_DB_SSLMODE, _SSLROOTCERT, _CHANNEL_BINDING; unset: libpq's)
        "OPTIONS": {"target_session_attrs": "read-write", **{
            option: os.environ[name] for option, name in (
                ("sslmode", "KV_DB_SSLMODE"), ("sslrootcert", "KV_DB_SSLROOTCERT"),
                ("channel_binding", "KV_DB_CHANNEL_BINDING"),
            ) if os.environ.get(name)
        }},
        "CONN_MAX_AGE": None,
    }},
)

SQL = "SELECT value, version, deleted FROM kv_item WHERE key = %s"
# kv.writes' two round trips of a write at w=quorum. k = 1 only sets the function's fail-fast
# check; the commit waits for the standbys the primary's synchronous_standby_names asks for.
WRITE_SQL = ("BEGIN; SELECT * FROM kv_write('put', %s, %s::jsonb, 'none', '{}'::bigint[], "
             "'quorum', 1)")
COMMIT_SQL = "COMMIT; SELECT pg_current_wal_lsn()::text"


def item(request, key):
    if request.method == "PUT":
        return put(request, key)
    with connection.cursor() as cur:
        cur.execute(SQL, [key])
        row = cur.fetchone()
    if row is None or row[2]:
        return JsonResponse({"error": "not_found", "detail": "no such key"}, status=404)
    value = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    return JsonResponse({"key": key, "value": value, "version": str(row[1])})


def put(request, key):
    value = json.loads(request.body)["value"]
    with connection.cursor() as cur:
        cur.execute(WRITE_SQL, [key, json.dumps(value, separators=(",", ":"))])
        status, version, created, _ = cur.fetchone()
        cur.execute(COMMIT_SQL)
        lsn = cur.fetchone()[0]
    if status != "ok":
        return JsonResponse({"error": status}, status=503)
    resp = JsonResponse({"key": key, "value": value, "version": str(version)},
                        status=201 if created else 200)
    resp["X-KV-Token"] = lsn
    return resp


urlpatterns = [path("min/<str:key>", item)]
application = get_wsgi_application()
