"""Through PgBouncer (Debian's 1.18) in transaction pooling: what has to be switched off, what a
waiting lease costs the pool, and why the NOTIFY hint needs session pooling.

examples/python-test.sh runs PgBouncer with three pools onto one database: ``courier_py``
(transaction pooling), ``courier_py_one`` (transaction pooling, one server connection) and
``courier_py_session`` (session pooling).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
import pytest
from conftest import ThreadWorker, fates, results
from psycopg import errors

import courier


def bouncer(dbname: str, **kwargs: Any) -> psycopg.Connection[Any]:
    base = os.environ.get("COURIER_TEST_BOUNCER")
    if not base:
        raise pytest.UsageError("COURIER_TEST_BOUNCER is not set: run examples/python-test.sh")
    return psycopg.connect(f"{base} dbname={dbname}", autocommit=True, **kwargs)


def test_prepared_statements_break_transaction_pooling(queue: str) -> None:
    """psycopg prepares a statement it has run 5 times (prepare_threshold) on the server
    connection it happens to have; PgBouncer 1.18 hands that server connection to other clients,
    which then collide with (or miss) the prepared statement."""
    a, b = bouncer("courier_py_one"), bouncer("courier_py_one")
    with pytest.raises((errors.DuplicatePreparedStatement, errors.InvalidSqlStatementName)):
        for _ in range(10):
            courier.stats(a, queue)
            courier.stats(b, queue)
    a.close(), b.close()
    # Switched off, the same calls work.
    a, b = (
        bouncer("courier_py_one", prepare_threshold=None),
        bouncer("courier_py_one", prepare_threshold=None),
    )
    for _ in range(10):
        assert courier.stats(a, queue).ready == 0
        assert courier.stats(b, queue).ready == 0
    a.close(), b.close()


def test_a_waiting_lease_holds_a_server_connection(queue: str) -> None:
    """A lease with a wait is one statement: it keeps its server connection until it returns, so
    a pool needs one server connection per waiting consumer on top of everything else."""

    def blocked_for(dbname: str) -> float:
        waiter = bouncer(dbname, prepare_threshold=None)
        other = bouncer(dbname, prepare_threshold=None)
        t = threading.Thread(target=courier.lease, args=(waiter, queue), kwargs={"wait": 2})
        t.start()
        time.sleep(0.3)  # the lease is waiting in the server now
        started = time.monotonic()
        other.execute("SELECT 1")
        took = time.monotonic() - started
        t.join()
        waiter.close(), other.close()
        return took

    assert blocked_for("courier_py_one") > 1.2  # queued behind the wait: the pool's one connection
    assert blocked_for("courier_py") < 0.5  # a second server connection was free


def test_notify_hint_needs_session_pooling(conn: psycopg.Connection[Any], queue: str) -> None:
    courier.alter_queue(conn, queue, notify=True)
    pooled = bouncer("courier_py", prepare_threshold=None)
    session = bouncer("courier_py_session", prepare_threshold=None)
    for listener in (pooled, session):
        listener.execute("LISTEN courier")
    courier.enqueue(conn, queue, {"n": 1})
    got = [n.payload for n in session.notifies(timeout=3, stop_after=1)]
    assert got == [queue]
    # In transaction pooling the LISTEN ran on a server connection that went back to the pool
    # when its transaction ended; the notification never reaches this client.
    assert [n.payload for n in pooled.notifies(timeout=1, stop_after=1)] == []
    pooled.close(), session.close()


def test_worker_through_transaction_pooling(dsn: str, conn: psycopg.Connection[Any], queue: str) -> None:
    """The exactly-once worker through PgBouncer with prepared statements off: every message's
    work commits once."""
    ids = [e.id for e in courier.enqueue_batch(conn, queue, [{"n": i} for i in range(40)])]
    base = os.environ["COURIER_TEST_BOUNCER"]

    def handler(job: courier.Job) -> None:
        assert isinstance(job.tx, psycopg.Connection)
        job.tx.execute(
            "INSERT INTO results (queue, message_id, attempt, n, by_whom) VALUES (%s, %s, %s, %s, 'bouncer')",
            [queue, job.id, job.attempt, job.payload["n"]],
        )

    w = ThreadWorker(
        courier.Worker(
            f"{base} dbname=courier_py", queue, handler, exactly_once=True, concurrency=4, wait=1,
            visibility_timeout=10, connect_kwargs={"prepare_threshold": None},
        )
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while len(courier.completed_messages(conn, queue)) < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = w.stop()
    assert fates(conn, queue) == dict.fromkeys(ids, ("acked", 1))
    assert results(conn, queue) == {i: [(1, "bouncer")] for i in ids}
    assert stats.acked == 40
