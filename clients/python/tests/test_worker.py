"""The worker's contract against a live server, each test accounting for every message."""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import pytest
from conftest import ThreadWorker, fates, log_events, results, wait_until

import courier


def enqueue_all(conn: psycopg.Connection[Any], queue: str, payloads: list[dict[str, Any]]) -> list[int]:
    return [e.id for e in courier.enqueue_batch(conn, queue, payloads)]


def test_config_errors_are_refused_at_construction() -> None:
    def make(**kw: Any) -> courier.Worker:
        return courier.Worker("dbname=x", "q", lambda j: None, **kw)

    with pytest.raises(ValueError, match="below visibility_timeout"):
        make(visibility_timeout=5, handler_timeout=5, heartbeat=False)
    with pytest.raises(ValueError, match="concurrency"):
        make(concurrency=0)
    with pytest.raises(ValueError, match="queue"):
        courier.Worker("dbname=x", "", lambda j: None)
    with pytest.raises(ValueError, match="visibility_timeout"):
        make(visibility_timeout=0)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        make(visibility_timeout=3, heartbeat_interval=3)
    # With the heartbeat, a handler may outlast one visibility timeout.
    make(visibility_timeout=3, handler_timeout=60)


def test_unknown_queue_is_an_error_at_start(dsn: str) -> None:
    worker = courier.Worker(dsn, "no_such_queue", lambda j: None)
    with pytest.raises(courier.QueueNotFound, match="no_such_queue"):
        worker.run(install_signal_handlers=False)


def test_every_message_acked_once(dsn: str, conn: psycopg.Connection[Any], queue: str) -> None:
    seen: list[int] = []

    def handler(job: courier.Job) -> None:
        seen.append(job.payload["n"])

    ids = enqueue_all(conn, queue, [{"n": i} for i in range(40)])
    w = ThreadWorker(courier.Worker(dsn, queue, handler, concurrency=4, visibility_timeout=5, wait=1))
    wait_until("all acked", lambda: len(courier.completed_messages(conn, queue)) == 40)
    stats = w.stop()
    assert fates(conn, queue) == dict.fromkeys(ids, ("acked", 1))
    assert sorted(seen) == list(range(40))
    assert stats.acked == 40 and stats.failed == 0


def test_failures_retry_in_and_poison(
    dsn: str, conn: psycopg.Connection[Any], queue: str, spawn: Any
) -> None:
    courier.alter_queue(conn, queue, max_attempts=3)
    payloads = [
        {"n": 0},  # fine
        {"n": 1, "fail": {"1": "poison"}},  # dead at once, after one attempt
        {"n": 2, "fail": {"1": "error", "2": "error", "3": "error"}},  # dead after max_attempts
        {"n": 3, "fail": {"1": "retry"}},  # back after RetryIn's 0.1 s, then fine
        {"n": 4, "fail": {"1": "error"}},  # back after the queue's backoff, then fine
    ]
    ids = enqueue_all(conn, queue, payloads)
    p = spawn(queue, concurrency=2, visibility_timeout=5, wait=0.5)
    wait_until("all settled", lambda: all(f[0] in ("acked", "dead") for f in fates(conn, queue).values()))
    p.signal(signal.SIGTERM)
    code, out = p.wait(10)
    assert code == 0, out
    assert fates(conn, queue) == {
        ids[0]: ("acked", 1),
        ids[1]: ("dead", 1, "bad payload"),
        ids[2]: ("dead", 3, "RuntimeError: boom 2"),
        ids[3]: ("acked", 2),
        ids[4]: ("acked", 2),
    }
    # The next attempt saw why the previous one failed.
    starts = {(m, a): e for m, a, e in log_events(conn, queue, "start")}
    assert starts[(ids[3], 2)] == "try later"
    assert starts[(ids[4], 2)] == "RuntimeError: boom 4"
    assert starts[(ids[2], 3)] == "RuntimeError: boom 2"


def test_kill_9_mid_handler(dsn: str, conn: psycopg.Connection[Any], queue: str, spawn: Any) -> None:
    """Exactly-once worker killed while three handlers run: those three come back after the
    visibility timeout, and every message's work commits once."""
    ids = enqueue_all(conn, queue, [{"n": i, "sleep": {"1": 30}} for i in range(6)])
    p = spawn(queue, exactly_once=True, concurrency=3, visibility_timeout=2, wait=0.5)
    wait_until("three handlers running", lambda: len(log_events(conn, queue, "start")) == 3)
    p.signal(signal.SIGKILL)
    p.wait(10)
    in_flight = {m for m, _, _ in log_events(conn, queue, "start")}
    assert {m: f[0] for m, f in fates(conn, queue).items() if m in in_flight} == dict.fromkeys(
        in_flight, "leased"
    )

    w = ThreadWorker(
        courier.Worker(dsn, queue, _record_result(queue), exactly_once=True, concurrency=3, wait=0.5)
    )
    wait_until("all acked", lambda: len(courier.completed_messages(conn, queue)) == 6)
    w.stop()
    assert fates(conn, queue) == {i: ("acked", 2 if i in in_flight else 1) for i in ids}
    assert {m: [a for a, _ in r] for m, r in results(conn, queue).items()} == {
        i: [2 if i in in_flight else 1] for i in ids
    }


def _record_result(queue: str) -> courier.worker.Handler:
    def handler(job: courier.Job) -> None:
        assert isinstance(job.tx, psycopg.Connection)
        job.tx.execute(
            "INSERT INTO results (queue, message_id, attempt, n, by_whom) VALUES (%s, %s, %s, %s, 'thread')",
            [queue, job.id, job.attempt, job.payload["n"]],
        )

    return handler


def test_sigterm_lets_running_handlers_finish(conn: psycopg.Connection[Any], queue: str, spawn: Any) -> None:
    ids = enqueue_all(conn, queue, [{"n": i, "sleep": {"1": 1.5}} for i in range(6)])
    p = spawn(queue, exactly_once=True, concurrency=2, visibility_timeout=10, wait=0.5, grace_period=10)
    wait_until("two handlers running", lambda: len(log_events(conn, queue, "start")) == 2)
    started = time.monotonic()
    p.signal(signal.SIGTERM)
    code, out = p.wait(10)
    assert code == 0, out
    assert time.monotonic() - started < 5
    running = {m for m, _, _ in log_events(conn, queue, "start")}
    assert len(running) == 2
    # The two running finished and were acked; nothing else was leased.
    assert fates(conn, queue) == {i: ("acked", 1) if i in running else ("ready", 0, None) for i in ids}
    assert {m: len(r) for m, r in results(conn, queue).items()} == dict.fromkeys(running, 1)


def test_sigterm_past_grace_gives_the_rest_back(
    conn: psycopg.Connection[Any], queue: str, spawn: Any
) -> None:
    """Handlers that outlast the grace period are abandoned: their transaction rolls back and
    their message is nacked with retry_in => 0, ready again at once."""
    ids = enqueue_all(conn, queue, [{"n": i, "sleep": {"1": 20}} for i in range(3)])
    p = spawn(
        queue, exactly_once=True, concurrency=3, visibility_timeout=30, handler_timeout=25, grace_period=1
    )
    wait_until("three handlers running", lambda: len(log_events(conn, queue, "start")) == 3)
    started = time.monotonic()
    p.signal(signal.SIGTERM)
    code, out = p.wait(10)
    assert code == 0, out
    assert 1 <= time.monotonic() - started < 5
    assert fates(conn, queue) == dict.fromkeys(ids, ("ready", 1, "worker shut down"))
    assert results(conn, queue) == {}
    assert "nacked_at_shutdown=3" in out


def test_second_sigterm_stops_at_once(conn: psycopg.Connection[Any], queue: str, spawn: Any) -> None:
    """A second signal does not wait and does not nack: leases run out as after a crash."""
    ids = enqueue_all(conn, queue, [{"n": i, "sleep": {"1": 20}} for i in range(2)])
    p = spawn(
        queue, exactly_once=True, concurrency=2, visibility_timeout=30, handler_timeout=25, grace_period=20
    )
    wait_until("two handlers running", lambda: len(log_events(conn, queue, "start")) == 2)
    started = time.monotonic()
    p.signal(signal.SIGTERM)
    time.sleep(0.3)
    p.signal(signal.SIGTERM)
    code, out = p.wait(10)
    assert code == 0, out
    assert time.monotonic() - started < 3
    assert fates(conn, queue) == dict.fromkeys(ids, ("leased", 1, None))
    assert results(conn, queue) == {}


def test_overrun_is_nacked_as_timeout(
    dsn: str, conn: psycopg.Connection[Any], queue: str, spawn: Any
) -> None:
    ids = enqueue_all(conn, queue, [{"n": 0, "sleep": {"1": 4}}, {"n": 1}])
    p = spawn(queue, concurrency=2, visibility_timeout=10, handler_timeout=1, wait=0.5)
    wait_until("both acked", lambda: len(courier.completed_messages(conn, queue)) == 2)
    p.signal(signal.SIGTERM)
    code, out = p.wait(10)
    assert code == 0, out
    assert fates(conn, queue) == {ids[0]: ("acked", 2), ids[1]: ("acked", 1)}
    starts = {(m, a): e for m, a, e in log_events(conn, queue, "start")}
    assert starts == {(ids[0], 1): None, (ids[0], 2): "timeout after 1 s", (ids[1], 1): None}
    assert "timed_out=1" in out


def test_heartbeat_keeps_a_long_handler_alive(
    dsn: str, conn: psycopg.Connection[Any], queue: str, spawn: Any
) -> None:
    """A 7-second handler on a 3-second visibility timeout (heartbeats every second, so a worker
    stalled for 2 s by a busy machine still keeps it): no one else can lease it, it is processed
    once."""
    ids = enqueue_all(conn, queue, [{"n": 0, "sleep": {"1": 7}}])
    p = spawn(queue, exactly_once=True, visibility_timeout=3, handler_timeout=10, wait=0.5)
    wait_until("handler running", lambda: len(log_events(conn, queue, "start")) == 1)
    while not courier.completed_messages(conn, queue):
        assert courier.lease(conn, queue) == [], "the message was leased while its handler ran"
        time.sleep(0.2)
    p.signal(signal.SIGTERM)
    code, out = p.wait(10)
    assert code == 0, out
    assert fates(conn, queue) == {ids[0]: ("acked", 1)}
    assert [a for a, _ in results(conn, queue)[ids[0]]] == [1]


def test_lease_lost_while_stopped(dsn: str, conn: psycopg.Connection[Any], queue: str, spawn: Any) -> None:
    """SIGSTOP the worker mid-handler past its visibility timeout; another consumer takes the
    message and acks it. Woken, the worker finds its lease lost and its writes roll back."""
    ids = enqueue_all(conn, queue, [{"n": 0, "sleep": {"1": 1}}])
    p = spawn(
        queue, exactly_once=True, visibility_timeout=1.5, heartbeat_interval=0.5, handler_timeout=10, wait=0.5
    )
    wait_until("handler running", lambda: len(log_events(conn, queue, "start")) == 1)
    p.signal(signal.SIGSTOP)
    rescued: list[courier.Message] = []

    def take() -> bool:
        rescued.extend(courier.lease(conn, queue))
        return bool(rescued)

    wait_until("the lease to expire and the message to be leased again", take)
    [m] = rescued
    assert m.attempt == 2
    with conn.transaction():
        conn.execute(
            "INSERT INTO results (queue, message_id, attempt, n, by_whom) VALUES (%s, %s, %s, 0, 'rescuer')",
            [queue, m.id, m.attempt],
        )
        courier.ack(conn, m.receipt, strict=True)
    p.signal(signal.SIGCONT)
    time.sleep(2)  # the worker wakes, finds the lease lost, rolls back
    p.signal(signal.SIGTERM)
    code, out = p.wait(10)
    assert code == 0, out
    assert fates(conn, queue) == {ids[0]: ("acked", 2)}
    assert results(conn, queue) == {ids[0]: [(2, "rescuer")]}
    assert "lease_lost=1" in out


def test_terminated_connections(dsn: str, conn: psycopg.Connection[Any], queue: str) -> None:
    """pg_terminate_backend of the worker's connections, again and again: it reconnects, every
    message's work commits once."""
    ids = enqueue_all(conn, queue, [{"n": i} for i in range(60)])

    def handler(job: courier.Job) -> None:
        time.sleep(0.1)
        _record_result(queue)(job)

    w = ThreadWorker(
        courier.Worker(
            dsn, queue, handler, exactly_once=True, concurrency=3, visibility_timeout=1, wait=0.3,
            reconnect_backoff=(0.05, 0.2), connect_kwargs={"application_name": f"tw {queue}"},
        )
    )  # fmt: skip
    terminated = rounds = 0
    while len(courier.completed_messages(conn, queue)) < 60 and rounds < 12:
        rounds += 1
        terminated += conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            [f"tw {queue}"[:63]],
        ).fetchone()[0]  # type: ignore[index]
        time.sleep(0.25)
    wait_until("all acked", lambda: len(courier.completed_messages(conn, queue)) == 60)
    stats = w.stop()
    print(f"rounds {rounds}, connections terminated {terminated}, {stats}")
    assert terminated >= 10 and stats.reconnects >= 10
    assert {i: f[0] for i, f in fates(conn, queue).items()} == dict.fromkeys(ids, "acked")
    assert {m: len(r) for m, r in results(conn, queue).items()} == dict.fromkeys(ids, 1)
