"""What TLS to PostgreSQL costs a client, on loopback: a throw-away PostgreSQL (initdb in a
temporary directory, SCRAM, a CA and a server certificate with IP:127.0.0.1 made here) reached
the way the lab's clients reach theirs, with and without TLS:

- plain: sslmode=disable, SCRAM-SHA-256;
- tls: sslmode=verify-full against the CA, TLS 1.3 only, channel_binding=require
  (SCRAM-SHA-256-PLUS).

Per mode: connection set-up (connect + first query, new connection each time) and a query on a
kept connection (the app keeps its connections, CONN_MAX_AGE), the app's read statement shape on
a one-row table; median and p99 in microseconds, and the client's CPU per operation. Modes are
interleaved round by round. Bounded: ROUNDS x (CONNECTS + QUERIES) operations.

    app/.venv/bin/python bench/pg_tls_cost.py [rounds]      (PostgreSQL 15 in KV_TEST_PG_BIN)
"""

import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

PG_BIN = Path(os.environ.get("KV_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
CONNECTS = 100  # per mode and round
QUERIES = 2000  # per mode and round
PASSWORD = "bench-only"
# PostgreSQL refuses to run as root: then it runs as Debian's postgres user
AS_PG = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def run(*argv, **kwargs):
    subprocess.run(argv, check=True, capture_output=True, timeout=120, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(d: Path) -> None:
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384",
        "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "1",
        "-subj", "/CN=bench CA", "-addext", "basicConstraints=critical,CA:TRUE")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"), "-subj", "/CN=pg")
    (d / "ext").write_text("subjectAltName=DNS:pg,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
        "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1", "-out",
        str(d / "server.crt"), "-extfile", str(d / "ext"))
    os.chmod(d / "server.key", 0o600)


def timed(fn, n: int) -> tuple[list[float], float]:
    """n calls of fn: wall time of each (us) and this process' CPU per call (us)."""
    cpu0 = time.process_time()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out, (time.process_time() - cpu0) * 1e6 / n


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="pg-tls-cost-"))
    data, port = work / "data", free_port()
    started = False
    try:
        make_certs(work)
        (work / "pw").write_text(PASSWORD)
        if AS_PG:
            pg = pwd.getpwnam("postgres")
            for path in [work, *work.iterdir()]:
                os.chown(path, pg.pw_uid, pg.pw_gid)
        run(*AS_PG, str(PG_BIN / "initdb"), "-D", str(data), "-U", "bench", "--pwfile",
            str(work / "pw"), "--auth-local=trust", "--auth-host=scram-sha-256")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses='127.0.0.1'\nport={port}\nunix_socket_directories="
                       f"'{work}'\nssl=on\nssl_cert_file='{work}/server.crt'\n"
                       f"ssl_key_file='{work}/server.key'\nssl_min_protocol_version='TLSv1.3'\n"
                       "fsync=off\n")
        run(*AS_PG, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w",
            "-t", "60", "start")
        started = True
        base = dict(host="127.0.0.1", port=port, user="bench", password=PASSWORD,
                    dbname="postgres", connect_timeout=5)
        modes = {
            "plain": {"sslmode": "disable"},
            "tls": {"sslmode": "verify-full", "sslrootcert": str(work / "ca.crt"),
                    "channel_binding": "require"},
        }
        setup = psycopg2.connect(**base, **modes["plain"])
        setup.autocommit = True
        setup.cursor().execute("CREATE TABLE kv_item (key text PRIMARY KEY, value jsonb, "
                               "version bigint, deleted bool); INSERT INTO kv_item VALUES "
                               "('k', '{\"a\": 1}', 1, false)")
        setup.close()
        figures = {m: {"connect": [], "connect_cpu": [], "query": [], "query_cpu": []}
                   for m in modes}
        for _ in range(ROUNDS):
            for mode, opts in modes.items():
                def connect(opts=opts):
                    c = psycopg2.connect(**base, **opts)
                    c.cursor().execute("SELECT 1")
                    c.close()

                walls, cpu = timed(connect, CONNECTS)
                figures[mode]["connect"] += walls
                figures[mode]["connect_cpu"].append(cpu)
                conn = psycopg2.connect(**base, **opts)
                cur = conn.cursor()

                def query(cur=cur):
                    cur.execute("SELECT value, version, deleted FROM kv_item WHERE key = %s",
                                ["k"])
                    cur.fetchone()

                walls, cpu = timed(query, QUERIES)
                figures[mode]["query"] += walls
                figures[mode]["query_cpu"].append(cpu)
                conn.close()
        report = {}
        for mode, f in figures.items():
            report[mode] = {
                f"{op}_{stat}_us": round(fn(f[op]), 1)
                for op in ("connect", "query")
                for stat, fn in (("p50", statistics.median),
                                 ("p99", lambda v: statistics.quantiles(v, n=100)[98]))
            } | {f"{op}_cpu_us": round(statistics.median(f[f"{op}_cpu"]), 1)
                 for op in ("connect", "query")}
        report["tls_to_plain"] = {
            k: round(report["tls"][k] / report["plain"][k], 2) for k in report["plain"]
        }
        print(json.dumps({"rounds": ROUNDS, "connects": CONNECTS, "queries": QUERIES,
                          "libpq": psycopg2.extensions.libpq_version(), **report}, indent=1))
    finally:
        if started:
            run(*AS_PG, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
