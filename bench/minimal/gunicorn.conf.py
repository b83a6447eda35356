"""gunicorn for the minimal project: plain sync workers, nothing else (gunicorn's defaults)."""

import os

# one address or several, comma-separated (the lab serves it on every instance's port)
bind = os.environ.get("MINIMAL_BIND", "127.0.0.1:8001").split(",")
workers = int(os.environ.get("MINIMAL_WORKERS", "4"))
worker_class = "sync"
threads = 1
