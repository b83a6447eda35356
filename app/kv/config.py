"""Reading the service's configuration from the environment (pure functions, no Django).

Every variable is documented in app/README.md; the deployment renders them into /etc/kv/env.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ADDR_RE = re.compile(
    r"^\[(?P<h6>[0-9A-Fa-f:.]+)\](?::(?P<p6>\d+))?$|^(?P<h>[^:\[\]]+)(?::(?P<p>\d+))?$"
)
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Node:
    """One PostgreSQL node of KV_DB_NODES; ``name`` is also its Django database alias."""

    name: str
    host: str
    port: int


def parse_bool(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise ImproperlyConfigured(f"not a boolean: {value!r} (use true/false)")


def parse_access_log(value: str) -> bool | str:
    """KV_ACCESS_LOG: ``writes`` (every write, and every read answered 4xx/5xx or slowly), true
    (every request), false (none)."""
    if value.strip().lower() == "writes":
        return "writes"
    try:
        return parse_bool(value)
    except ImproperlyConfigured:
        raise ImproperlyConfigured(f"KV_ACCESS_LOG: not writes, true or false: {value!r}") \
            from None


def parse_nodes(spec: str) -> list[Node]:
    """Parse ``"pg1=10.0.0.11:5432,pg2=10.0.0.12:5432"`` (IPv6: ``pg1=[::1]:5432``).

    The name must equal the standby's ``application_name`` (the inventory hostname), because the
    service matches nodes against the primary's ``pg_stat_replication`` by it.
    """
    nodes: list[Node] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, addr = item.partition("=")
        name = name.strip()
        if not sep or not NODE_NAME_RE.match(name) or name == "default":
            raise ImproperlyConfigured(f"KV_DB_NODES: bad node name in {item!r}")
        addr = addr.strip()
        m = ADDR_RE.match(addr)
        if not m:
            raise ImproperlyConfigured(f"KV_DB_NODES: bad address in {item!r}")
        host = m.group("h6") or m.group("h")
        port = int(m.group("p6") or m.group("p") or 5432)
        if not 0 < port < 65536:
            raise ImproperlyConfigured(f"KV_DB_NODES: bad port in {item!r}")
        if any(n.name == name for n in nodes):
            raise ImproperlyConfigured(f"KV_DB_NODES: duplicate node name {name!r}")
        nodes.append(Node(name, host, port))
    if not nodes:
        raise ImproperlyConfigured(
            "KV_DB_NODES is empty: list every PostgreSQL node, name=host:port")
    return nodes


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc
    if not value >= minimum or value != value or value == float("inf"):
        raise ImproperlyConfigured(f"{name} must be a finite number >= {minimum}, got {raw!r}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


def default_instance() -> str:
    return f"{socket.gethostname()}:{env_int('KV_PORT', 8000)}"
