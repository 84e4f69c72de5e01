"""examples/asyncpg: what happened to every message and every invoice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import courier
import orders_asyncpg as app
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import asyncpg

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    """A database of this module's own (with courier), so its tables are created once."""
    base = os.environ["COURIER_TEST_DSN"]
    db = f"courier_example_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    dsn = make_conninfo(base, dbname=db)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION courier")
    yield dsn
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP DATABASE "{db}" WITH (FORCE)')


def url(dsn: str) -> str:
    d: dict[str, Any] = conninfo_to_dict(dsn)
    return f"postgresql://{d['user']}@{d['host']}:{d['port']}/{d['dbname']}"


def fates(dsn: str, queue: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        s = courier.stats(c, queue)
        assert (s.ready, s.delayed, s.in_flight, s.dead) == (0, 0, 0, 0), s
        return {m.payload["order_id"]: ("acked", m.attempt) for m in courier.completed_messages(c, queue)}


def test_codecs_orders_and_a_late_consumer(dsn: str) -> None:
    async def scenario() -> tuple[str, list[int], list[str], str, list[Any]]:
        pool = await app.create_pool(url(dsn))
        queue = f"apg_{uuid.uuid4().hex[:8]}"
        async with pool.acquire() as conn:
            await conn.execute(app.SCHEMA)
            await conn.execute("SELECT courier.create_queue($1, retention => '1 hour')", queue)
        orders = [await app.place_order(pool, queue, item) for item in ("tea", "cake")]
        with contextlib.suppress(RuntimeError):
            await app.place_order(pool, queue, "caviar", fail=True)
        slow = asyncio.create_task(app.invoice_one(pool, queue, "slow", visibility_timeout=0.5, stall=1.0))
        await asyncio.sleep(0.7)
        fast = [await app.invoice_one(pool, queue, "fast") for _ in range(3)]
        async with pool.acquire() as conn:
            invoices = await conn.fetch(
                "SELECT order_id, attempt, by_whom FROM apg_invoice WHERE order_id = ANY($1)"
                " ORDER BY order_id",
                orders,
            )
            caviar = await conn.fetchval("SELECT count(*) FROM apg_order WHERE item = 'caviar'")
        await pool.close()
        assert caviar == 0
        return queue, orders, fast, await slow, [tuple(r) for r in invoices]

    queue, orders, fast, slow, invoices = asyncio.run(scenario())
    assert slow == "lease lost"
    assert fast == ["done", "done", "empty"]  # the caviar order enqueued nothing
    # The slow consumer's message went to the fast one at attempt 2; its own invoice rolled back.
    assert invoices == [(orders[0], 2, "fast"), (orders[1], 1, "fast")]
    assert fates(dsn, queue) == {orders[0]: ("acked", 2), orders[1]: ("acked", 1)}


def test_without_the_codec_jsonb_is_text(dsn: str) -> None:
    async def scenario() -> tuple[str, type]:
        conn = await asyncpg.connect(url(dsn))
        try:
            await conn.fetchval("SELECT courier.enqueue('nope', $1)", {"a": 1})
        except asyncpg.DataError as err:
            refused = str(err)
        else:
            refused = ""
        value = await conn.fetchval("SELECT '{\"a\": 1}'::jsonb")
        await conn.close()
        return refused, type(value)

    refused, loaded = asyncio.run(scenario())
    assert "expected str, got dict" in refused
    assert loaded is str


def test_the_program_runs(dsn: str) -> None:
    out = subprocess.run(
        [sys.executable, str(HERE / "orders_asyncpg.py"), url(dsn)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "order for caviar failed (card declined): no order, no job" in out
    assert "slow consumer: lease lost; fast consumer: ['done', 'done', 'empty']" in out
    assert "'fast'), (" in out and "'slow'" not in out.split("invoices:")[1]
