"""Production settings, read from the environment (the role renders /etc/kv/env).

Every variable is documented in app/README.md. Nothing secret lives in this file.
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from kv.config import (
    default_instance,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_access_log,
    parse_bool,
    parse_nodes,
)

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set (see app/README.md)")
DEBUG = parse_bool(env_str("DJANGO_DEBUG", "false"))
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")

INSTALLED_APPS = [
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "kv",
]

# kv.httpmetrics: the django-prometheus request metrics that dashboards and alerts read (same
# series as django-prometheus's PrometheusAfterMiddleware), at less cost per request.
MIDDLEWARE = [
    "kv.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "kv.httpmetrics.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "kvsite.urls"
WSGI_APPLICATION = "kvsite.wsgi.application"
TEMPLATES: list[dict] = []
USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False
APPEND_SLASH = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ------------------------------------------------------------------ database nodes
KV_NODES = parse_nodes(env_str("KV_DB_NODES"))
KV_DB_NAME = env_str("KV_DB_NAME", "kv")
_connect_timeout = env_int("KV_DB_CONNECT_TIMEOUT", 2, minimum=1)
_conn_max_age = env_int("KV_DB_CONN_MAX_AGE", 300, minimum=0)
_options = {
    "connect_timeout": _connect_timeout,
    "application_name": "kv-app",
    "sslmode": env_str("KV_DB_SSLMODE", "prefer"),
    # verify-full (the role's setting) needs the CA the servers' certificates come from;
    # channel_binding=require refuses SCRAM without TLS channel binding. Unset: libpq's defaults.
    **{
        name: value
        for name, value in (
            ("sslrootcert", env_str("KV_DB_SSLROOTCERT")),
            ("channel_binding", env_str("KV_DB_CHANNEL_BINDING")),
        )
        if value
    },
    # Notice a dead peer within a few seconds instead of the kernel's two hours.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": _connect_timeout * 2000,
}


def _db(host: str, port: str, **extra_options: object) -> dict:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": KV_DB_NAME,
        "USER": env_str("KV_DB_USER", "kv"),
        "PASSWORD": env_str("KV_DB_PASSWORD"),
        "HOST": host,
        "PORT": port,
        "CONN_MAX_AGE": _conn_max_age,
        # No SELECT 1 before every request: reads retry a dead kept connection once
        # (kv.probe.on_node) and writes check a connection that sat idle (kv.writes).
        "CONN_HEALTH_CHECKS": False,
        "OPTIONS": {**_options, **extra_options},
        "TEST": {"MIGRATE": True},
    }


# "default": libpq's multi-host form that lands on whichever node accepts writes; used by
# `manage.py migrate` only. Requests and the management commands route through kv.routers,
# which uses the primary the service discovered itself (newest timeline).
DATABASES = {
    "default": _db(
        ",".join(n.host for n in KV_NODES),
        ",".join(str(n.port) for n in KV_NODES),
        target_session_attrs="read-write",
    ),
}
for _node in KV_NODES:
    DATABASES[_node.name] = _db(_node.host, str(_node.port))
DATABASE_ROUTERS = ["kv.routers.NodeRouter"]

# ------------------------------------------------------------------ the service's knobs
KV = {
    "SYNC_STANDBYS": env_str("KV_SYNC_STANDBYS").strip() or None,  # None: discover from primary
    "WRITE_TIMEOUT": env_float("KV_WRITE_TIMEOUT", 5.0, minimum=0.05),
    "READ_TIMEOUT": env_float("KV_READ_TIMEOUT", 2.0, minimum=0.05),
    "MAX_VALUE_BYTES": env_int("KV_MAX_VALUE_BYTES", 1048576, minimum=1),
    "MAX_LAG": env_float("KV_MAX_LAG", 5.0),
    "NODE_CACHE_TTL": env_float("KV_NODE_CACHE_TTL", 1.0),
    "TOKEN_CACHE_TTL": env_float("KV_TOKEN_CACHE_TTL", 5.0),
    "READ_POOL_SIZE": env_int("KV_READ_POOL_SIZE", 2, minimum=1),
    "LIST_DEFAULT_LIMIT": env_int("KV_LIST_DEFAULT_LIMIT", 100, minimum=1),
    "LIST_MAX_LIMIT": env_int("KV_LIST_MAX_LIMIT", 1000, minimum=1),
    "INSTANCE": env_str("KV_INSTANCE") or default_instance(),
    "ACCESS_LOG": parse_access_log(env_str("KV_ACCESS_LOG", "writes")),
    "ACCESS_LOG_SLOW": env_float("KV_ACCESS_LOG_SLOW", 0.5),
}
# The balancer's health checks and Prometheus address an instance by its own address: accept
# the host part of KV_INSTANCE and KV_BIND_ADDRESS without listing them again.
for _host in (KV["INSTANCE"].rsplit(":", 1)[0].strip("[]"), env_str("KV_BIND_ADDRESS")):
    if _host and _host not in ("0.0.0.0", "::") and _host not in ALLOWED_HOSTS:
        ALLOWED_HOSTS.append(_host)
if KV["SYNC_STANDBYS"] is not None:
    try:
        KV["SYNC_STANDBYS"] = int(KV["SYNC_STANDBYS"])
    except ValueError as exc:
        raise ImproperlyConfigured("KV_SYNC_STANDBYS must be an integer or empty") from exc

# A whole request body may hold the largest value plus the key and the JSON around them.
DATA_UPLOAD_MAX_MEMORY_SIZE = KV["MAX_VALUE_BYTES"] + 4096
DATA_UPLOAD_MAX_NUMBER_FIELDS = 100

# ------------------------------------------------------------------ security
# nginx terminates TLS and sets X-Forwarded-Proto; it also redirects port 80 to 443. The app
# ports are only reachable on the hosts' internal addresses (balancer, Prometheus), and
# /healthz, /readyz and /metrics must answer plain HTTP there, so the app does not redirect by
# default. KV_SSL_REDIRECT=true turns Django's redirect on (the probes stay exempt).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = parse_bool(env_str("KV_SSL_REDIRECT", "false"))
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SILENCED_SYSTEM_CHECKS = [] if SECURE_SSL_REDIRECT else ["security.W008"]
SECURE_HSTS_SECONDS = env_int("KV_HSTS_SECONDS", 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = parse_bool(env_str("KV_HSTS_INCLUDE_SUBDOMAINS", "true"))
SECURE_HSTS_PRELOAD = parse_bool(env_str("KV_HSTS_PRELOAD", "true"))
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "no-referrer"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_FAILURE_VIEW = "kv.errors.csrf_failure"  # JSON, like every other error
X_FRAME_OPTIONS = "DENY"
USE_X_FORWARDED_HOST = False

# ------------------------------------------------------------------ DRF and the schema
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["kv.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["kv.auth.HasScope"],
    "DEFAULT_PARSER_CLASSES": ["kv.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "kv.parsers.JSONOnlyNegotiation",
    "DEFAULT_THROTTLE_CLASSES": [],  # rate limits live in nginx
    "EXCEPTION_HANDLER": "kv.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "UNAUTHENTICATED_TOKEN": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "KV service",
    "DESCRIPTION": "Key-value store with per-request quorum consistency on PostgreSQL replication.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "kv.schema.add_headers"],
}

# ------------------------------------------------------------------ metrics and logs
PROMETHEUS_EXPORT_MIGRATIONS = False  # a migration gauge per process is wrong in multiprocess mode
PROMETHEUS_METRIC_NAMESPACE = ""

LOG_LEVEL = env_str("KV_LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("KV_LOG_FORMAT", "json").lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "kv.logjson.EcsJsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Requests are logged once, by kv.middleware, with ECS fields.
        "django.request": {"level": "CRITICAL", "propagate": True},
        "django.server": {"level": "CRITICAL", "propagate": True},
        "django.db.backends": {"level": "INFO", "propagate": True},
    },
}
