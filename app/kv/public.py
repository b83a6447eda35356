"""What the public side is told. nginx sets X-Forwarded-For on every request it forwards, so a
request that carries it came through the balancer (or from someone who asked for less detail);
a request without it reached an instance's internal listener directly (the balancer's checks,
Prometheus, operators). Public error bodies name nodes but no internal address or port, and the
public /readyz says only whether the instance is ready; the logs and the internal listener keep
the detail."""

import re

from django.conf import settings

HIDDEN = "<internal>"
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_HOST_PORT = re.compile(re.escape(HIDDEN) + r"\]?:\d+")
_PORT = re.compile(r"\bport \d+")


def is_public(request) -> bool:
    return request is not None and "HTTP_X_FORWARDED_FOR" in request.META


def redact(text: str) -> str:
    """``text`` without the database nodes' and this instance's addresses and ports."""
    names = {node.name for node in settings.KV_NODES}
    hosts = {node.host for node in settings.KV_NODES} - names
    for host in sorted((h for h in hosts if h), key=len, reverse=True):
        text = text.replace(host, HIDDEN)
    text = _IPV4.sub(HIDDEN, text)
    text = _HOST_PORT.sub(HIDDEN, text)
    return _PORT.sub(f"port {HIDDEN}", text)


def redact_body(body):
    """A JSON-able error body with every string redacted."""
    if isinstance(body, str):
        return redact(body)
    if isinstance(body, dict):
        return {k: redact_body(v) for k, v in body.items()}
    if isinstance(body, list | tuple):
        return [redact_body(v) for v in body]
    return body
