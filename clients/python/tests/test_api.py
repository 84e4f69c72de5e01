"""The typed calls: results, errors as classes, and the caller's transaction in each form."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from conftest import fates, sa_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import courier
import courier.aio


def test_round_trip_types(conn: psycopg.Connection[Any], queue: str) -> None:
    mid = courier.enqueue(
        conn, queue, {"to": "ada", "n": [1, 2.5, None]}, headers={"trace": "t1"}, priority=3
    )
    other = courier.enqueue(conn, queue, ["an", "array"])  # a list is a JSON array, not a SQL array
    [m, m2] = courier.lease(conn, queue, batch_size=10, visibility_timeout=timedelta(seconds=30))
    assert (m.id, m.payload, m.headers, m.attempt, m.priority, m.last_error) == (
        mid, {"to": "ada", "n": [1, 2.5, None]}, {"trace": "t1"}, 1, 3, None,
    )  # fmt: skip
    assert (m2.id, m2.payload) == (other, ["an", "array"])
    assert isinstance(m.receipt, uuid.UUID)
    assert courier.extend(conn, m.receipt, 60) is True
    assert courier.ack(conn, m.receipt) is True
    assert courier.ack(conn, m.receipt) is False
    assert courier.nack(conn, str(m2.receipt), retry_in=0, error="later") is True
    [again] = courier.lease(conn, queue)
    assert (again.id, again.attempt, again.last_error) == (other, 2, "later")
    assert courier.nack_batch(conn, [again.receipt], dead=True, error="poison") == 1
    assert fates(conn, queue) == {mid: ("acked", 1), other: ("dead", 2, "poison")}
    assert courier.redrive(conn, queue) == 1
    assert courier.ack_batch(conn, [m.receipt for m in courier.lease(conn, queue)]) == 1
    assert fates(conn, queue) == {mid: ("acked", 1), other: ("acked", 1)}
    s = courier.stats(conn, queue)
    assert (s.ready, s.in_flight, s.dead) == (0, 0, 0)


def test_enqueue_unique_and_batch(conn: psycopg.Connection[Any], queue: str) -> None:
    first = courier.enqueue_unique(conn, queue, {"event": 1}, "evt-1")
    assert first.duplicate is False
    assert courier.enqueue_unique(conn, queue, {"event": 1}, "evt-1") == courier.Enqueued(first.id, True)
    batch = courier.enqueue_batch(
        conn, queue, [{"i": 0}, {"i": 1}, {"i": 2}], dedup_keys=[None, "evt-1", "b"]
    )
    assert [b.duplicate for b in batch] == [False, True, False]
    assert batch[1].id == first.id
    assert courier.enqueue(conn, queue, {"x": 1}, dedup_key="b") == batch[2].id
    assert courier.purge_queue(conn, queue) == 3


def stale_receipt(conn: psycopg.Connection[Any], queue: str) -> courier.Receipt:
    courier.enqueue(conn, queue, {})
    [m] = courier.lease(conn, queue)
    assert courier.ack(conn, m.receipt)
    return m.receipt


def test_errors_are_classes(conn: psycopg.Connection[Any], queue: str) -> None:
    stale = stale_receipt(conn, queue)
    cases: list[tuple[type[courier.CourierError], str, Any]] = [
        (courier.QueueExists, "42710", lambda: courier.create_queue(conn, queue)),
        (courier.QueueNotFound, "42704", lambda: courier.lease(conn, "no_such_queue")),
        (courier.InvalidArgument, "22023", lambda: courier.lease(conn, queue, batch_size=0)),
        (courier.InvalidQueueName, "42602", lambda: courier.enqueue(conn, "bad name", 1)),
        (courier.QueueNameTooLong, "42622", lambda: courier.enqueue(conn, "q" * 64, 1)),
        (courier.InvalidReceipt, "22P02", lambda: courier.ack(conn, "not a receipt")),
        (courier.NullArgument, "22004", lambda: courier.enqueue_unique(conn, queue, 1, None)),  # type: ignore[arg-type]
        (courier.LeaseLost, "QC001", lambda: courier.ack(conn, stale, strict=True)),
    ]
    for cls, sqlstate, call in cases:
        with pytest.raises(cls) as info:
            call()
        assert info.value.sqlstate == sqlstate
        assert isinstance(info.value.__cause__, psycopg.Error)
    with pytest.raises(courier.PayloadTooLarge):
        courier.enqueue(conn, queue, "x" * (2 << 20))
    with pytest.raises(courier.WrongIsolationLevel), conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        courier.lease(conn, queue, wait=1)


def test_caller_transaction_psycopg(dsn: str, conn: psycopg.Connection[Any], queue: str) -> None:
    with psycopg.connect(dsn) as c:  # not autocommit: calls join the open transaction
        courier.enqueue(c, queue, {"n": 1})
        c.rollback()
        kept = courier.enqueue(c, queue, {"n": 2})
        assert courier.lease(conn, queue) == []  # not committed yet
        c.commit()
    assert [m.id for m in courier.lease(conn, queue)] == [kept]


def _engine(dsn: str) -> sa.Engine:
    return sa.create_engine(sa_url(dsn))


def test_caller_transaction_sqlalchemy(dsn: str, conn: psycopg.Connection[Any], queue: str) -> None:
    engine = _engine(dsn)
    with Session(engine) as session:
        courier.enqueue(session, queue, {"n": 1})
        session.rollback()
        with session.begin():
            kept = courier.enqueue(session, queue, {"n": 2})
    with engine.connect() as c:
        # A Connection outside a transaction: the call begins one, and commit() commits it.
        also = courier.enqueue(c, queue, {"n": 3})
        c.commit()
        courier.enqueue(c, queue, {"n": 4})
        c.rollback()
    ids = [m.id for m in courier.lease(conn, queue, batch_size=10)]
    assert sorted(ids) == sorted([kept, also])
    engine.dispose()


def test_wrong_executor_types(dsn: str) -> None:
    with pytest.raises(TypeError, match="cannot run on a str"):
        courier.enqueue("not a connection", "q", 1)
    engine = sa.create_engine("sqlite://")
    with Session(engine) as s, pytest.raises(TypeError, match="psycopg"):
        courier.enqueue(s, "q", 1)


def test_aio_mirrors_the_sync_api() -> None:
    for name in courier.__all__:
        fn = getattr(courier, name)
        if inspect.isfunction(fn):
            afn = getattr(courier.aio, name)
            assert inspect.iscoroutinefunction(afn), name
            sync_params = list(inspect.signature(fn).parameters)
            assert list(inspect.signature(afn).parameters) == sync_params, name


def test_aio(dsn: str, conn: psycopg.Connection[Any], queue: str) -> None:
    stale = stale_receipt(conn, queue)
    [stale_id] = [c.id for c in courier.completed_messages(conn, queue)]

    async def main() -> list[int]:
        async with await psycopg.AsyncConnection.connect(dsn) as ac:
            mid = await courier.aio.enqueue(ac, queue, {"n": 1})
            await ac.commit()
            [m] = await courier.aio.lease(ac, queue, visibility_timeout=5)
            await ac.commit()
            with pytest.raises(courier.LeaseLost):
                async with ac.transaction():
                    await courier.aio.ack(ac, stale, strict=True)
            assert await courier.aio.ack(ac, m.receipt, strict=True)
            await ac.commit()
        engine = create_async_engine(sa_url(dsn))
        async with AsyncSession(engine) as session, session.begin():
            other = await courier.aio.enqueue(session, queue, {"n": 2})
        async with engine.connect() as aconn:
            await courier.aio.enqueue(aconn, queue, {"n": 3})
            await aconn.rollback()
        await engine.dispose()
        return [mid, other]

    mid, other = asyncio.run(main())
    assert fates(conn, queue) == {mid: ("acked", 1), other: ("ready", 0, None), stale_id: ("acked", 1)}


def test_message_groups(conn: psycopg.Connection[Any], queue: str) -> None:
    """One group's messages are delivered in order, one lease at a time (group_batch at once)."""
    courier.alter_queue(conn, queue, group_on_dead="block", group_order="fair")
    [info] = [q for q in courier.queues(conn) if q.queue == queue]
    assert (info.group_on_dead, info.group_order) == ("block", "fair")
    a = [courier.enqueue(conn, queue, {"a": i}, group_key="a") for i in range(3)]
    b = [e.id for e in courier.enqueue_batch(conn, queue, [{"b": 0}, {"b": 1}], group_keys=["b", "b"])]
    first = courier.lease(conn, queue, batch_size=10)
    assert sorted((m.group_key, m.id) for m in first) == [("a", a[0]), ("b", b[0])]  # one head per group
    assert courier.lease(conn, queue, batch_size=10) == []  # both groups are held
    groups = {g.group_key: g for g in courier.queue_groups(conn, queue)}
    assert (groups["a"].in_flight, groups["a"].head_message_id, groups["a"].blocked) == (1, a[0], False)
    assert courier.ack_batch(conn, [m.receipt for m in first]) == 2
    two = courier.lease(conn, queue, batch_size=10, group_batch=2)
    assert sorted(m.id for m in two) == sorted([a[1], a[2], b[1]])
    assert courier.ack_batch(conn, [m.receipt for m in two]) == 3
    assert fates(conn, queue) == dict.fromkeys(a + b, ("acked", 1))
    assert courier.stats(conn, queue).groups_held == 0
