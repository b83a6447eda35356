"""CPU time of each middleware of the app, in-process, on a request that touches no database.

    cd app && .venv/bin/python ../bench/middleware_cost.py [COUNT]

Builds Django's WSGI handler with the app's settings (metrics in multiprocess mode, as in
production: PROMETHEUS_MULTIPROC_DIR is a temporary directory; the access log on, written to
/dev/null) once with the whole MIDDLEWARE list and once without each middleware in turn, and
reports ``time.process_time`` per GET /healthz for each, in alternating rounds. The difference to
the whole list is what that middleware costs per request.
"""

import io
import os
import sys
import tempfile
import time

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
ROUNDS = 3


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="kv-mwcost-")
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "kvsite.settings", "DJANGO_SECRET_KEY": "mwcost-only",
        "KV_DB_NODES": "pg1=127.0.0.1:1", "PROMETHEUS_MULTIPROC_DIR": tmp,
        "KV_INSTANCE": "127.0.0.1:8000", "KV_LOG_LEVEL": "INFO",
    })
    sys.path.insert(0, os.getcwd())
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the access log's stream
    out = sys.__stdout__
    import django

    django.setup()
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/healthz", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "HTTP_USER_AGENT": "wrk/4.2", "HTTP_AUTHORIZATION": "Bearer x",
    }

    def start_response(status, headers, exc_info=None):
        return None

    full = list(settings.MIDDLEWARE)
    variants = {"all middleware": full, "none": []}
    variants.update({f"without {m.rsplit('.', 1)[1]}": [x for x in full if x != m]
                     for m in full})
    handlers = {}
    for name, mw in variants.items():
        with override_settings(MIDDLEWARE=mw):
            handlers[name] = WSGIHandler()
    results: dict[str, list[float]] = {k: [] for k in handlers}
    for _ in range(ROUNDS):
        for name, handler in handlers.items():
            for _ in range(200):
                handler(dict(environ), start_response)
            started = time.process_time()
            for _ in range(COUNT):
                handler(dict(environ), start_response)
            results[name].append((time.process_time() - started) / COUNT * 1e6)
    base = min(results["all middleware"])
    print(f"GET /healthz, CPU per request (best of {ROUNDS} rounds of {COUNT}):", file=out)
    for name, runs in results.items():
        best = min(runs)
        print(f"  {name:45} {best:7.1f} us   {base - best:+7.1f} us vs all", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
