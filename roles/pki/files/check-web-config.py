#!/usr/bin/python3
"""Check a Prometheus-family web configuration (--web.config.file) before it goes live.

Usage: kv-check-web-config FILE. The file is JSON (what role pki's web_config entry point
writes): TLS with a certificate and the key that belongs to it, basic auth users stored as bcrypt
hashes. Exit status 0 when it is usable, 1 with the reason otherwise.
"""

import json
import re
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization

BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
TLS_VERSIONS = {"TLS10", "TLS11", "TLS12", "TLS13"}


def check(path):
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        return "not a mapping"
    unknown = set(config) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        return f"unknown keys {sorted(unknown)}"
    tls = config.get("tls_server_config") or {}
    if not tls.get("cert_file") or not tls.get("key_file"):
        return "tls_server_config needs cert_file and key_file"
    if tls.get("min_version", "TLS12") not in TLS_VERSIONS:
        return f"tls_server_config.min_version must be one of {sorted(TLS_VERSIONS)}"
    with open(tls["cert_file"], "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(tls["key_file"], "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return f"{tls['key_file']} is not the key of {tls['cert_file']}"
    users = config.get("basic_auth_users")
    if not isinstance(users, dict) or not users:
        return "basic_auth_users must name at least one user"
    bad = sorted(u for u, h in users.items() if not isinstance(h, str) or not BCRYPT.match(h))
    if bad:
        return f"basic_auth_users without a bcrypt hash: {bad}"
    return None


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: kv-check-web-config FILE")
    try:
        error = check(argv[1])
    except (OSError, ValueError) as e:
        error = str(e)
    if error:
        sys.exit(f"{argv[1]}: {error}")


if __name__ == "__main__":
    main(sys.argv)
