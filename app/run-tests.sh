#!/usr/bin/env bash
# Run the KV service's tests: a real PostgreSQL primary and two streaming standbys are started on
# loopback ports by the fixtures (tests/pgcluster.py) and stopped at the end.
# Creates app/.venv from the pinned requirement files when it is missing or they changed.
# Usage: app/run-tests.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")"

PG_BIN="${KV_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$PG_BIN/initdb" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "run-tests: installing the PostgreSQL 15 server (Debian package postgresql-15)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
    else
        echo "run-tests: PostgreSQL 15 server binaries not found in $PG_BIN" \
             "(apt-get install postgresql-15, or set KV_TEST_PG_BIN)" >&2
        exit 1
    fi
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "run-tests: running as root needs the unprivileged 'postgres' user" >&2
    exit 1
fi

stamp=".venv/.requirements.sha256"
want="$(cat requirements.txt requirements-test.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "run-tests: creating app/.venv from requirements-test.txt" >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
    echo "$want" > "$stamp"
fi

exec .venv/bin/python -m pytest -q "$@"
