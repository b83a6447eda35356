"""The read engine's queries: every read of kv.reads (keys and listings) and the token lookups
(kv.auth) in the request thread, one non-blocking query per node, waited on together.

A quorum read needs the answers of R nodes at once. Handing R - 1 of its queries to other
threads costs, per request, about as much CPU as a query (a Future, a wake-up, the GIL passed
back and forth; the figures are in docs/benchmarks.md). Here the request thread keeps one
asynchronous libpq connection per node (psycopg2 ``async_=1``), sends the statement to every node
it asks before waiting for any, and waits for their sockets with poll(2): the nodes work
concurrently, the thread never blocks on one of them, and no other thread is involved.

The deadline (``timeout``, KV_READ_TIMEOUT) bounds the whole read, connecting included. A node
that fails is replaced by the next candidate at once; a node that is merely silent (cut
network, frozen host) is hedged: after a quarter of the timeout one more candidate is asked
beside it, so a hung node delays a read by that much instead of failing it. A connection that
did not answer is closed, since what it would still send is unknown, and its node is reported
failed (asked last until the next probe). A kept connection that turns out dead (the node
restarted since) is retried once on a new one.

Connections follow KV_DB_CONN_MAX_AGE like Django's: reopened once older than that, closed after
every read when it is 0. Asynchronous connections run every statement in its own implicit
transaction (autocommit), which is what a single SELECT needs. jsonb arrives decoded (psycopg2's
default typecaster).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterator

import psycopg2
from django.conf import settings
from psycopg2 import extensions

_local = threading.local()
_POLL_OK = extensions.POLL_OK
_POLL_READ = extensions.POLL_READ
_POLL_WRITE = extensions.POLL_WRITE
_RETRYABLE = (psycopg2.OperationalError, psycopg2.InterfaceError)
# Part of the timeout after which a read still short of answers asks one more node.
HEDGE_FRACTION = 0.25
# Seconds between two checks of a node that failed ``check`` (behind a session token), while
# the read is short of nodes.
RECHECK_INTERVAL = 0.02


class _Conn:
    __slots__ = ("conn", "opened")

    def __init__(self, conn, opened: float) -> None:
        self.conn = conn
        self.opened = opened


def _kept() -> dict[str, _Conn]:
    """This thread's connections (node -> _Conn); none survive a fork."""
    kept = getattr(_local, "conns", None)
    if kept is None or _local.pid != os.getpid():
        kept = _local.conns = {}
        _local.pid = os.getpid()
    return kept


def _connect(alias: str):
    db = settings.DATABASES[alias]
    params = {k: v for k, v in db["OPTIONS"].items() if k != "target_session_attrs"}
    # tells these apart from the request threads' Django connections in pg_stat_activity
    params["application_name"] = f"{params.get('application_name', 'kv-app')}/read"
    return psycopg2.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"],
                            host=db["HOST"], port=db["PORT"], async_=1, **params)


def close_all() -> None:
    """Close this thread's connections (after every read when KV_DB_CONN_MAX_AGE is 0)."""
    for kept in _kept().values():
        _discard(kept.conn)
    _kept().clear()


def _discard(conn) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection must not raise
        conn.close()


# What an _Op is doing: connecting (or idle), running the check, running the query.
_CONNECTING, _CHECKING, _QUERYING = 0, 1, 2


class _Op:
    """One node's part of a read: connecting (maybe), the check (maybe), then the query."""

    __slots__ = ("conn", "cur", "name", "reused", "stage", "started", "want")

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.perf_counter()
        kept = _kept().get(name)
        max_age = settings.DATABASES[name].get("CONN_MAX_AGE")
        if kept is not None and (kept.conn.closed or (
                max_age is not None and time.monotonic() - kept.opened > max_age)):
            _discard(kept.conn)
            del _kept()[name]
            kept = None
        self.reused = kept is not None
        self.cur = None
        self.stage = _CONNECTING
        if kept is not None:
            self.conn = kept.conn
        else:
            self.conn = _connect(name)
            _kept()[name] = _Conn(self.conn, time.monotonic())
        self.want = _POLL_WRITE  # until the first poll() says otherwise

    def reconnect(self) -> None:
        _discard(self.conn)
        self.reused = False
        self.stage = _CONNECTING
        self.cur = None
        self.conn = _connect(self.name)
        _kept()[self.name] = _Conn(self.conn, time.monotonic())
        self.want = _POLL_WRITE

    def drop(self) -> None:
        _discard(self.conn)
        kept = _kept().get(self.name)
        if kept is not None and kept.conn is self.conn:
            del _kept()[self.name]


def gather(sql: str, params: list, candidates: Iterator[str], need: int, timeout: float,
           on_failure: Callable[[str, BaseException | str], str],
           on_answer: Callable[[str, float], None] | None = None,
           check: tuple[str, list, str] | None = None, many: bool = False,
           ) -> tuple[list[tuple[str, object]], dict[str, str]]:
    """Run ``sql`` on ``need`` nodes taken from ``candidates`` at once, replacing a node that
    fails by the next candidate. When the answers are still short after a quarter of
    ``timeout`` (HEDGE_FRACTION), one more candidate is asked beside the slow ones (a hedged
    request: a node that hangs delays a read by that much, not by the whole timeout); a node
    that had not answered by the time the others were enough is reported through
    ``on_failure`` too. Returns the (node, first row or None; with ``many`` every row)
    answers, ``need`` of them or more when the read succeeded, and each asked node's outcome
    ("ok", ``on_failure``'s text, or the check's). Fewer answers than ``need``: the
    candidates or the time ran out.

    ``check`` = (sql, params, outcome): a statement run on each node before ``sql``, in a
    statement of its own (so the read's snapshot is taken after it); a node whose check's
    first column is not true does not count: its outcome is ``outcome``, it is not reported
    failed, and the next candidate is asked instead. While the nodes in flight cannot make
    ``need`` any more, such a node is checked again every RECHECK_INTERVAL until the deadline
    (a standby a few milliseconds behind a ``w=one`` write)."""
    started = time.monotonic()
    deadline = started + timeout
    hedge_at: float | None = started + timeout * HEDGE_FRACTION
    candidates = iter(candidates)
    ops: list[_Op] = []
    answers: list[tuple[str, object]] = []
    outcomes: dict[str, str] = {}
    behind: dict[str, float] = {}  # node that failed the check -> when to check it again

    def open_op(name: str) -> _Op | None:
        """Ask ``name``: its operation, or None when not even a connection attempt started."""
        try:
            op = _Op(name)
        except psycopg2.Error as exc:
            outcomes[name] = on_failure(name, exc)
            return None
        ops.append(op)
        return op

    def start() -> None:
        # the next candidate that accepts a connection attempt at all
        for name in candidates:
            if name in outcomes or any(op.name == name for op in ops):
                continue
            if open_op(name) is not None:
                return

    def fail(op: _Op, exc: BaseException | str) -> None:
        ops.remove(op)
        op.drop()
        outcomes[op.name] = on_failure(op.name, exc)
        start()

    def advance(op: _Op) -> None:
        """Drive ``op`` as far as it goes without blocking."""
        while True:
            try:
                state = op.conn.poll()
                if state == _POLL_OK:
                    if op.stage == _CONNECTING:
                        op.cur = op.conn.cursor()
                        if check is not None:
                            op.cur.execute(check[0], check[1])
                            op.stage = _CHECKING
                        else:
                            op.cur.execute(sql, params)
                            op.stage = _QUERYING
                        continue
                    if op.stage == _CHECKING:
                        passed = op.cur.fetchone()
                        if not (passed and passed[0]):
                            ops.remove(op)  # healthy, only behind: its connection is kept
                            outcomes[op.name] = check[2]  # type: ignore[index]
                            behind[op.name] = time.monotonic() + RECHECK_INTERVAL
                            start()
                            return
                        op.cur.execute(sql, params)
                        op.stage = _QUERYING
                        continue
                    row = op.cur.fetchall() if many else op.cur.fetchone()
                    ops.remove(op)
                    if on_answer is not None:
                        on_answer(op.name, time.perf_counter() - op.started)
                    outcomes[op.name] = "ok"
                    answers.append((op.name, row))
                    return
                op.want = state
                return
            except _RETRYABLE as exc:
                if op.reused:
                    try:
                        op.reconnect()
                    except psycopg2.Error as again:
                        fail(op, again)
                        return
                    continue
                fail(op, exc)
                return
            except psycopg2.Error as exc:
                fail(op, exc)
                return

    try:
        for _ in range(need):
            start()
        for op in list(ops):
            advance(op)
        while (ops or behind) and len(answers) < need:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                break
            if behind and len(ops) + len(answers) < need:
                name, at = min(behind.items(), key=lambda item: item[1])
                if now >= at:
                    del behind[name]
                    op = open_op(name)
                    if op is not None:
                        advance(op)
                    continue
                left = min(left, at - now)
            if hedge_at is not None:
                if now >= hedge_at:
                    hedge_at = None
                    start()
                    continue
                left = min(left, hedge_at - now)
            poller = select.poll()
            by_fd: dict[int, _Op] = {}
            for op in ops:
                fd = op.conn.fileno()
                by_fd[fd] = op
                poller.register(fd, select.POLLIN if op.want == _POLL_READ else select.POLLOUT)
            for fd, _events in poller.poll(left * 1000):
                op = by_fd[fd]
                if op in ops:
                    advance(op)
        for op in ops:
            outcomes[op.name] = on_failure(
                op.name, f"no answer within {timeout}s" if len(answers) < need else
                f"no answer within {time.monotonic() - started:.3f}s, when the other nodes' "
                "answers were enough")
    finally:
        for op in ops:  # no answer in time (or an exception is on its way out): state unknown
            op.drop()
        if settings.DATABASES["default"].get("CONN_MAX_AGE") == 0:
            close_all()  # KV_DB_CONN_MAX_AGE=0: no connection outlives its request, as in Django
    return answers, outcomes
