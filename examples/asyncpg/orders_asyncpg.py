"""courier from asyncpg, with its codecs set up once, in the pool's ``init``.

    python orders_asyncpg.py postgresql://user@host:port/dbname

asyncpg sends and returns jsonb as text until a codec says otherwise: without ``init`` a dict
payload fails ("expected str, got dict") and a leased payload comes back as a str. Intervals
are ``timedelta`` (a string like '5 seconds' is refused), receipts come back as UUIDs. Behind
PgBouncer in transaction pooling, pass ``statement_cache_size=0`` (asyncpg prepares every query).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import timedelta
from typing import Any

import asyncpg


async def init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ, schema="pg_catalog", encoder=json.dumps, decoder=json.loads, format="text"
        )


async def create_pool(dsn: str, *, behind_pgbouncer: bool = False) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, init=init_connection, min_size=1, max_size=4, statement_cache_size=0 if behind_pgbouncer else 100
    )


SCHEMA = """
CREATE TABLE IF NOT EXISTS apg_order (id bigserial PRIMARY KEY, item text NOT NULL);
CREATE TABLE IF NOT EXISTS apg_invoice (order_id bigint NOT NULL, attempt int NOT NULL, by_whom text);
"""


async def place_order(pool: asyncpg.Pool, queue: str, item: str, *, fail: bool = False) -> int:
    """The order and its job in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        order_id: int = await conn.fetchval("INSERT INTO apg_order (item) VALUES ($1) RETURNING id", item)
        await conn.fetchval("SELECT courier.enqueue($1, $2)", queue, {"order_id": order_id, "item": item})
        if fail:
            raise RuntimeError("card declined")
        return order_id


async def invoice_one(
    pool: asyncpg.Pool, queue: str, who: str, *, visibility_timeout: float = 30, stall: float = 0
) -> str:
    """Leases one message (its own transaction), then writes the invoice and acks strictly in one
    transaction: 'done', 'empty', or 'lease lost' (the invoice rolled back)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, receipt, payload, attempt"
            "  FROM courier.lease($1, visibility_timeout => $2, wait => $3)",
            queue, timedelta(seconds=visibility_timeout), timedelta(seconds=1),
        )  # fmt: skip
        if not rows:
            return "empty"
        m: dict[str, Any] = dict(rows[0])
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO apg_invoice (order_id, attempt, by_whom) VALUES ($1, $2, $3)",
                    m["payload"]["order_id"], m["attempt"], who,
                )  # fmt: skip
                await asyncio.sleep(stall)
                await conn.execute("SELECT courier.ack($1, strict => true)", m["receipt"])
        except asyncpg.PostgresError as err:
            if err.sqlstate == "QC001":  # the lease ran out and someone else took the message
                return "lease lost"
            raise
        return "done"


async def main(dsn: str) -> None:
    pool = await create_pool(dsn)
    queue = f"apg_{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)
        await conn.execute("SELECT courier.create_queue($1, retention => '1 hour')", queue)
    orders = [await place_order(pool, queue, item) for item in ("tea", "cake")]
    try:
        await place_order(pool, queue, "caviar", fail=True)
    except RuntimeError as err:
        print(f"order for caviar failed ({err}): no order, no job")
    # A slow consumer whose lease (0.5 s) runs out mid-transaction, and a second one that takes over.
    slow = asyncio.create_task(invoice_one(pool, queue, "slow", visibility_timeout=0.5, stall=1.0))
    await asyncio.sleep(0.7)
    outcomes = [await invoice_one(pool, queue, "fast") for _ in range(3)]
    print(f"slow consumer: {await slow}; fast consumer: {outcomes}")
    async with pool.acquire() as conn:
        invoices = await conn.fetch(
            "SELECT order_id, by_whom FROM apg_invoice WHERE order_id = ANY($1) ORDER BY order_id", orders
        )
    print("invoices:", [(r["order_id"], r["by_whom"]) for r in invoices])
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
