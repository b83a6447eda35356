"""gunicorn configuration for one KV instance (``kv@<port>``); every knob comes from the env.

    gunicorn -c gunicorn.conf.py kvsite.wsgi:application

PROMETHEUS_MULTIPROC_DIR must be set, and be private to this instance (for example
/run/kv/metrics-<port>): it is emptied when the master starts, each worker writes its metric
files there, and ``child_exit`` marks a dead worker's live gauges gone.
"""

import os
import shutil

from gunicorn.glogging import Logger

_port = int(os.environ.get("KV_PORT", "8000"))
bind = [f"{os.environ.get('KV_BIND_ADDRESS', '127.0.0.1')}:{_port}"]
workers = int(os.environ.get("KV_WORKERS", str(max(2, os.cpu_count() or 1))))
worker_class = os.environ.get("KV_WORKER_CLASS", "gthread")
threads = int(os.environ.get("KV_THREADS", "4"))
timeout = int(os.environ.get("KV_WORKER_TIMEOUT", "60"))  # must exceed KV_WRITE_TIMEOUT
graceful_timeout = int(os.environ.get("KV_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("KV_KEEPALIVE", "75"))  # longer than nginx's upstream keepalive
max_requests = int(os.environ.get("KV_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
backlog = int(os.environ.get("KV_BACKLOG", "2048"))
preload_app = False  # each worker opens its own database connections and threads
# No control socket (gunicornc): nothing uses it, and the service may not write next to its code.
control_socket_disable = True
forwarded_allow_ips = os.environ.get("KV_FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = f"kv-{_port}"
# nginx enforces the request line and header limits (large_client_header_buffers) and answers
# them with JSON; gunicorn's own limits are lifted so that its HTML error pages (414, 431) can
# never reach a client through the balancer. A request line too long for nginx never gets here.
limit_request_line = 0  # unlimited
limit_request_field_size = 0  # unlimited
limit_request_fields = 32768  # gunicorn's maximum; nginx's header buffers hold far fewer
os.environ.setdefault("KV_INSTANCE", f"{os.uname().nodename}:{_port}")

# The app logs each request once as ECS JSON on stdout; gunicorn's access log is off and its
# own messages (worker boots, timeouts) go to stdout as ECS JSON too.
accesslog = None
errorlog = "-"


class NoAccessLogger(Logger):
    """gunicorn's logger without the access log. The stock one turns its access log on whenever
    logconfig_dict is set and then builds every request's atoms (a dict of all headers and the
    environ, a formatted date) only for the CRITICAL-level logger to drop them."""

    access_log_enabled = False

    def access(self, resp, req, environ, request_time):
        return


logger_class = NoAccessLogger
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "kv.logjson.EcsJsonFormatter"}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                   "formatter": "json"},
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
}


def on_starting(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        server.log.warning("PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows one worker only")
        return
    os.makedirs(path, exist_ok=True)
    for entry in os.listdir(path):  # stale files of a previous run would add up forever
        full = os.path.join(path, entry)
        if os.path.isdir(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
