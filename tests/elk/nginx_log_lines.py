"""Access lines exactly as the nginx role's log_format writes them.

Reads `log_format kv_json escape=json '...'` from roles/nginx/templates/nginx.conf.j2, fills each
nginx variable with a value nginx could log, and returns the lines. A field renamed in the nginx
role changes these lines, and the pipeline test then fails.

    python tests/elk/nginx_log_lines.py     # print them (e.g. to refresh fixtures/nginx.jsonl)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "roles" / "nginx" / "templates" / "nginx.conf.j2"
FORMAT_NAME = "kv_json"

# Values per request; a variable not listed logs "1" (valid quoted or not).
REQUESTS = [
    {
        "time_iso8601": "2026-11-28T03:40:01+00:00",
        "kv_request_id": "9b2e6c1d0a4f4e8e9f1a2b3c4d5e6f70",
        "request_id": "9b2e6c1d0a4f4e8e9f1a2b3c4d5e6f70",
        "remote_addr": "172.30.99.1",
        "request_method": "PUT",
        "request_uri": "/kv/k1?consistency=quorum",
        "uri": "/kv/k1",
        "server_protocol": "HTTP/2.0",
        "status": "201",
        "body_bytes_sent": "27",
        "request_length": "120",
        "request_time": "0.004",
        "upstream_addr": "172.30.99.21:8000",
        "upstream_status": "201",
        "upstream_response_time": "0.004",
        "upstream_connect_time": "0.000",
        "ssl_protocol": "TLSv1.3",
        "http_user_agent": "wrk/4.2",
    },
    {
        "time_iso8601": "2026-11-28T03:40:02+00:00",
        "kv_request_id": "69248e0e3ad646649121d4dca2065646",
        "request_id": "69248e0e3ad646649121d4dca2065646",
        "remote_addr": "172.30.99.1",
        "request_method": "GET",
        "request_uri": "/kv/k1",
        "uri": "/kv/k1",
        "server_protocol": "HTTP/1.1",
        "status": "200",
        "body_bytes_sent": "14",
        "request_length": "80",
        "request_time": "0.012",
        "upstream_addr": "172.30.99.21:8001, 172.30.99.22:8000",
        "upstream_status": "502, 200",
        "upstream_response_time": "0.008, 0.003",
        "upstream_connect_time": "0.001, 0.000",
        "ssl_protocol": "TLSv1.3",
        "http_user_agent": "curl/7.88.1",
    },
    {
        # Answered by nginx itself (rate limited): no upstream, empty upstream variables.
        "time_iso8601": "2026-11-28T03:40:03+00:00",
        "kv_request_id": "0d9b8a7c6e5f4d3c2b1a09f8e7d6c5b4",
        "request_id": "0d9b8a7c6e5f4d3c2b1a09f8e7d6c5b4",
        "remote_addr": "172.30.99.1",
        "request_method": "GET",
        "request_uri": "/kv/k2",
        "uri": "/kv/k2",
        "server_protocol": "HTTP/1.1",
        "status": "429",
        "body_bytes_sent": "0",
        "request_length": "80",
        "request_time": "0.000",
        "upstream_addr": "",
        "upstream_status": "",
        "upstream_response_time": "",
        "upstream_connect_time": "",
        "ssl_protocol": "",
        "http_user_agent": "",
    },
]


def log_format(template: Path = TEMPLATE) -> str | None:
    """The format string of `log_format kv_json`, or None when the nginx role has none."""
    if not template.exists():
        return None
    text = template.read_text()
    m = re.search(r"log_format\s+" + FORMAT_NAME + r"\b[^']*((?:'[^']*'\s*)+);", text)
    if not m:
        return None
    return "".join(re.findall(r"'([^']*)'", m.group(1)))


def lines(template: Path = TEMPLATE) -> list[str] | None:
    fmt = log_format(template)
    if fmt is None:
        return None
    out = []
    for values in REQUESTS:
        out.append(re.sub(r"\$(\w+)", lambda m, v=values: v.get(m.group(1), "1"), fmt))
    return out


if __name__ == "__main__":
    found = lines()
    if found is None:
        sys.exit(f"no log_format {FORMAT_NAME} in {TEMPLATE}")
    print("\n".join(found))
