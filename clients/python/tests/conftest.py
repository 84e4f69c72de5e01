"""Fixtures for the client's tests: a database with courier (made by examples/python-test.sh,
which exports COURIER_TEST_DSN), a fresh queue per test, and what happened to each message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import courier

HERE = Path(__file__).resolve().parent


def _dsn() -> str:
    dsn = os.environ.get("COURIER_TEST_DSN")
    if not dsn:
        raise pytest.UsageError("COURIER_TEST_DSN is not set: run examples/python-test.sh")
    return dsn


@pytest.fixture(scope="session")
def dsn() -> str:
    dsn = _dsn()
    with psycopg.connect(dsn) as conn:
        # pytest-xdist's workers all get here; one creates the tables.
        conn.execute("SELECT pg_advisory_xact_lock(23)")
        # What handlers record: every start of a handler (outside any transaction, so it stays
        # even if the handler's work rolls back) and, separately, the work itself.
        conn.execute(
            "CREATE TABLE IF NOT EXISTS handler_log (queue text, message_id bigint, attempt int,"
            " event text, pid int, last_error text, at timestamptz DEFAULT clock_timestamp())"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS results (queue text, message_id bigint, attempt int, n int,"
            " by_whom text)"
        )
    return dsn


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def queue(request: pytest.FixtureRequest, conn: psycopg.Connection[Any]) -> str:
    """A fresh queue that keeps acked messages (so a test sees each ack and its attempt)."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", request.node.name)[:40] + "_" + uuid.uuid4().hex[:8]
    courier.create_queue(conn, name, visibility_timeout=2, retention=3600, retry_base=0.05, retry_max=0.2)
    return name


def fates(conn: psycopg.Connection[Any], queue: str) -> dict[int, tuple[Any, ...]]:
    """Each message of the queue: ("acked", attempt), ("dead", attempts, last_error),
    ("leased" | "ready" | "delayed", attempt, last_error)."""
    out: dict[int, tuple[Any, ...]] = {}
    for c in courier.completed_messages(conn, queue):
        out[c.id] = ("acked", c.attempt)
    for d in courier.dead_letters(conn, queue):
        out[d.id] = ("dead", d.attempts, d.last_error)
    rows = conn.execute(
        "SELECT m.id, m.attempt, m.last_error,"
        "       CASE WHEN m.leased_until > clock_timestamp() THEN 'leased'"
        "            WHEN m.visible_at > clock_timestamp() THEN 'delayed' ELSE 'ready' END"
        "  FROM courier.message m JOIN courier.queue q USING (queue_id)"
        " WHERE q.name = %s AND m.dead_at IS NULL",
        [queue],
    ).fetchall()
    for mid, attempt, err, state in rows:
        out[mid] = (state, attempt, err)
    return out


def results(conn: psycopg.Connection[Any], queue: str) -> dict[int, list[tuple[int, str]]]:
    """Committed handler work per message: [(attempt, by_whom), ...]."""
    out: dict[int, list[tuple[int, str]]] = {}
    for mid, attempt, who in conn.execute(
        "SELECT message_id, attempt, by_whom FROM results WHERE queue = %s ORDER BY attempt", [queue]
    ):
        out.setdefault(mid, []).append((attempt, who))
    return out


def log_events(conn: psycopg.Connection[Any], queue: str, event: str) -> list[tuple[int, int, str | None]]:
    return conn.execute(
        "SELECT message_id, attempt, last_error FROM handler_log WHERE queue = %s AND event = %s ORDER BY at",
        [queue, event],
    ).fetchall()


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class WorkerProcess:
    """tests/worker_app.py in a child process."""

    def __init__(self, dsn: str, queue: str, **options: Any) -> None:
        import json

        self.args = [sys.executable, str(HERE / "worker_app.py"), dsn, queue, json.dumps(options)]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def spawn(dsn: str) -> Iterator[Callable[..., WorkerProcess]]:
    procs: list[WorkerProcess] = []

    def start(queue: str, **options: Any) -> WorkerProcess:
        p = WorkerProcess(dsn, queue, **options)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


class ThreadWorker:
    """A Worker running in a thread of the test process."""

    def __init__(self, worker: courier.Worker) -> None:
        self.worker = worker
        self.result: courier.WorkerStats | BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.worker.run(install_signal_handlers=False)
        except BaseException as err:
            self.result = err

    def stop(self, timeout: float = 15.0) -> courier.WorkerStats:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        assert isinstance(self.result, courier.WorkerStats), self.result
        return self.result


def sa_url(dsn: str, driver: str = "postgresql+psycopg") -> str:
    """A SQLAlchemy URL for a libpq connection string."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy import URL

    d = conninfo_to_dict(dsn)
    url = URL.create(
        driver,
        username=str(d.get("user", "postgres")),
        password=None if d.get("password") is None else str(d["password"]),
        host=str(d.get("host", "127.0.0.1")),
        port=int(d.get("port", 5432)),
        database=str(d.get("dbname", "postgres")),
    )
    return url.render_as_string(hide_password=False)
