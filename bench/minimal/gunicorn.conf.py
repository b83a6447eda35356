"""gunicorn for the minimal project: plain sync workers, nothing else (gunicorn's defaults)."""

import os

bind = [os.environ.get("MINIMAL_BIND", "127.0.0.1:8001")]
workers = int(os.environ.get("MINIMAL_WORKERS", "4"))
worker_class = "sync"
threads = 1
