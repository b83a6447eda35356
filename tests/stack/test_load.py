"""Which transport errors the load generator may send once more (tests/stack/harness/load.py)."""

from __future__ import annotations

import requests

from .harness.load import _closed_unanswered

TLS_EOF = requests.exceptions.SSLError(
    "HTTPSConnectionPool(host='172.19.0.2', port=443): Max retries exceeded with url: "
    "/api/kv/load-3-10 (Caused by SSLError(SSLEOFError(8, 'EOF occurred in violation of "
    "protocol (_ssl.c:2427)')))")
PLAIN_CLOSED = requests.ConnectionError(
    "('Connection aborted.', RemoteDisconnected('Remote end closed connection without "
    "response'))")


def test_a_connection_closed_before_any_answer_may_be_retried():
    assert _closed_unanswered(PLAIN_CLOSED)
    assert _closed_unanswered(TLS_EOF)


def test_other_transport_errors_count_as_failures():
    assert not _closed_unanswered(requests.exceptions.SSLError(
        "certificate verify failed: self-signed certificate"))
    assert not _closed_unanswered(requests.ConnectionError(
        "Failed to establish a new connection: [Errno 111] Connection refused"))
    assert not _closed_unanswered(requests.exceptions.ConnectTimeout("connect timeout=5"))
