"""A real PostgreSQL primary and streaming standbys on loopback ports, for tests and the bench.

initdb (scram-sha-256) -> primary with ``synchronous_standby_names = 'ANY k (s1, s2, ...)'``
-> ``pg_basebackup -C -S <slot>`` per standby -> standbys streaming with application_name = their
node name. PostgreSQL refuses to run as root, so as root every server command runs as the
unprivileged ``postgres`` user (Debian's package creates it) through ``runuser``.

CLI (used by bench.sh):  python -m tests.pgcluster start DIR  |  stop DIR
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg2

PG_BIN = Path(os.environ.get("KV_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
# Quotes, $, spaces and backticks: they find quoting bugs.
APP_PASSWORD = "pa'ss \"w$rd `x` 1"
SUPER_PASSWORD = "super-secret-test"
REPL_PASSWORD = "repl 'secret' $x"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _as_pg(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(_as_pg(cmd), capture_output=True, text=True, timeout=120, **kw)
    if res.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


@dataclass
class PgNode:
    name: str
    port: int
    datadir: str

    def dsn(self, user: str = SUPERUSER, password: str = SUPER_PASSWORD, db: str = "kv") -> dict:
        return {"host": "127.0.0.1", "port": self.port, "user": user, "password": password,
                "dbname": db, "connect_timeout": 3}


@dataclass
class PgCluster:
    base: str
    nodes: list[PgNode] = field(default_factory=list)
    k: int = 1
    fsync: bool = False

    # ---------------------------------------------------------------- life cycle
    @classmethod
    def create(cls, base: str | None = None, standbys: int = 2, k: int = 1,
               fsync: bool = False) -> PgCluster:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL server binaries not found in {PG_BIN}")
        base = base or tempfile.mkdtemp(prefix="kvpg-")
        os.makedirs(base, exist_ok=True)
        os.chmod(base, 0o755)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(base, pw.pw_uid, pw.pw_gid)
        ports = _free_ports(1 + standbys)
        names = ["p1"] + [f"s{i}" for i in range(1, standbys + 1)]
        nodes = [PgNode(n, p, os.path.join(base, n)) for n, p in zip(names, ports, strict=True)]
        cluster = cls(base, nodes, k, fsync)
        cluster._init_primary()
        for node in cluster.nodes[1:]:
            cluster._init_standby(node)
        cluster.wait_streaming(standbys)
        cluster.save()
        return cluster

    def save(self) -> None:
        Path(self.base, "cluster.json").write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, base: str) -> PgCluster:
        data = json.loads(Path(base, "cluster.json").read_text())
        data["nodes"] = [PgNode(**n) for n in data["nodes"]]
        return cls(**data)

    @property
    def primary(self) -> PgNode:
        return self.nodes[0]

    def node(self, name: str) -> PgNode:
        return next(n for n in self.nodes if n.name == name)

    def _write(self, path: str, text: str, mode: str = "w") -> None:
        with open(path, mode) as fh:
            fh.write(text)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _init_primary(self) -> None:
        p = self.primary
        pwfile = os.path.join(self.base, "pwfile")
        self._write(pwfile, SUPER_PASSWORD + "\n")
        _run([str(PG_BIN / "initdb"), "-D", p.datadir, "-U", SUPERUSER, "--pwfile", pwfile,
              "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        os.unlink(pwfile)
        standby_names = ", ".join(f'"{n.name}"' for n in self.nodes[1:])
        conf = f"""
listen_addresses = '127.0.0.1'
port = {p.port}
unix_socket_directories = '{self.base}'
max_connections = 200
shared_buffers = 64MB
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
max_slot_wal_keep_size = 1GB
wal_log_hints = on
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
synchronous_standby_names = 'ANY {self.k} ({standby_names})'
fsync = {"on" if self.fsync else "off"}
full_page_writes = {"on" if self.fsync else "off"}
logging_collector = off
log_min_messages = warning
"""
        self._write(os.path.join(p.datadir, "postgresql.auto.conf"), conf, "a")
        self._write(os.path.join(p.datadir, "pg_hba.conf"),
                    "local all all scram-sha-256\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n"
                    "host replication replicator 127.0.0.1/32 scram-sha-256\n")
        self.start(p)
        conn = self.connect(p, db="postgres")
        try:
            with conn.cursor() as cur:
                # no standby exists yet: do not wait for one
                cur.execute("SET synchronous_commit = local")
                cur.execute("CREATE ROLE replicator REPLICATION LOGIN PASSWORD %s",
                            [REPL_PASSWORD])
                cur.execute("CREATE ROLE kv LOGIN PASSWORD %s", [APP_PASSWORD])
                cur.execute("GRANT pg_read_all_stats TO kv")
                cur.execute("CREATE DATABASE kv OWNER kv")
        finally:
            conn.close()

    def _init_standby(self, node: PgNode) -> None:
        p = self.primary
        env = {**os.environ, "PGPASSWORD": REPL_PASSWORD}
        subprocess_cmd = [str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(p.port),
                          "-U", "replicator", "-D", node.datadir, "-X", "stream", "-C", "-S",
                          node.name, "--no-sync", "-c", "fast"]
        if os.geteuid() == 0:
            subprocess_cmd = ["runuser", "-u", "postgres", "--", "env",
                              f"PGPASSWORD={REPL_PASSWORD}", *subprocess_cmd]
        res = subprocess.run(subprocess_cmd, capture_output=True, text=True, timeout=120, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {res.stderr}")
        conninfo = (f"host=127.0.0.1 port={p.port} user=replicator "
                    f"password='{_q(REPL_PASSWORD)}' application_name={node.name}")
        self._write(os.path.join(node.datadir, "postgresql.auto.conf"),
                    f"\nport = {node.port}\nprimary_conninfo = '{_q(conninfo)}'\n"
                    f"primary_slot_name = '{node.name}'\n", "a")
        self._write(os.path.join(node.datadir, "standby.signal"), "")
        self.start(node)

    def start(self, node: PgNode) -> None:
        _run([str(PG_BIN / "pg_ctl"), "-D", node.datadir, "-l",
              os.path.join(self.base, f"{node.name}.log"), "-w", "-t", "60", "start"])

    def stop(self, node: PgNode, mode: str = "fast") -> None:
        _run([str(PG_BIN / "pg_ctl"), "-D", node.datadir, "-m", mode, "-w", "-t", "60", "stop"])

    def is_running(self, node: PgNode) -> bool:
        res = subprocess.run(_as_pg([str(PG_BIN / "pg_ctl"), "-D", node.datadir, "status"]),
                             capture_output=True, timeout=30)
        return res.returncode == 0

    def destroy(self) -> None:
        for node in self.nodes:
            if os.path.isdir(node.datadir) and self.is_running(node):
                with contextlib.suppress(RuntimeError):
                    self.stop(node, "immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # ---------------------------------------------------------------- helpers for tests
    def connect(self, node: PgNode, db: str = "kv", autocommit: bool = True):
        conn = psycopg2.connect(**node.dsn(db=db))
        conn.autocommit = autocommit
        return conn

    def sql(self, node: PgNode, query: str, params=None):
        conn = self.connect(node)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def streaming(self) -> dict[str, str]:
        rows = self.sql(self.primary, "SELECT application_name, sync_state FROM "
                                      "pg_stat_replication WHERE state = 'streaming' "
                                      "AND sync_state IN ('sync', 'quorum')")
        return dict(rows)

    def wait_streaming(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.streaming()) >= count:
                return
            time.sleep(0.1)
        raise RuntimeError(f"standbys not streaming after {timeout}s: {self.streaming()}")

    def wait_replayed(self, timeout: float = 10.0) -> None:
        """Wait until every running standby has replayed the primary's current WAL position
        (a test that then reads at r=one must not depend on which standby it gets)."""
        (target,), = self.sql(self.primary, "SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.name == self.primary.name or not self.is_running(node):
                continue
            while True:
                (behind,), = self.sql(node, "SELECT pg_last_wal_replay_lsn() < %s::pg_lsn",
                                      (target,))
                if not behind:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name} has not replayed {target} after {timeout}s")
                time.sleep(0.02)

    def env(self) -> dict[str, str]:
        """The service's environment for this cluster."""
        return {
            "KV_DB_NODES": ",".join(f"{n.name}=127.0.0.1:{n.port}" for n in self.nodes),
            "KV_DB_NAME": "kv",
            "KV_DB_USER": "kv",
            "KV_DB_PASSWORD": APP_PASSWORD,
        }


def _q(text: str) -> str:
    """Quote for a single-quoted libpq value or postgresql.conf string."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("start", "stop", "env"):
        print("usage: python -m tests.pgcluster start|stop|env DIR", file=sys.stderr)
        return 2
    cmd, base = argv[0], argv[1]
    if cmd == "start":
        cluster = PgCluster.create(base, fsync=os.environ.get("KV_TEST_FSYNC") == "1")
        print(json.dumps(cluster.env()))
    elif cmd == "env":
        print(json.dumps(PgCluster.load(base).env()))
    else:
        PgCluster.load(base).destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
