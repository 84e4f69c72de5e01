"""examples/django through its management commands, in a database of its own: what happened to
every order and every message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import courier
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent


@pytest.fixture
def dsn() -> Iterator[str]:
    base = os.environ["COURIER_TEST_DSN"]
    db = f"courier_django_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    dsn = make_conninfo(base, dbname=db)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION courier")
    yield dsn
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP DATABASE "{db}" WITH (FORCE)')


def manage(dsn: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=HERE, env={**os.environ, "COURIER_DJANGO_DSN": dsn}, capture_output=True, text=True,
        timeout=60, check=True, **kw,
    )  # fmt: skip


def test_orders_jobs_and_the_worker_command(dsn: str) -> None:
    manage(dsn, "migrate", "-v", "0")
    out = manage(
        dsn, "place_orders", "shipping", "ada", "mallory", "grace", "nobody", "--decline", "mallory"
    ).stdout
    assert "payment declined for mallory: no order, no job" in out

    with psycopg.connect(dsn, autocommit=True) as c:
        orders = dict(c.execute("SELECT customer, id FROM shop_order").fetchall())
        assert sorted(orders) == ["ada", "grace", "nobody"]  # mallory's order rolled back
        assert courier.stats(c, "shipping").ready == 3  # and so did its job

    # Through Django's connection, courier returns payloads as Python objects although Django
    # loads jsonb as text for its own cursors. The peeked message is given back at once.
    shell = (
        "from django.db import connection; import courier; [m] = courier.lease(connection, 'shipping');"
        "print('peeked', m.payload['order_id'], type(m.payload).__name__, m.attempt);"
        "courier.nack(connection, m.receipt, retry_in=0)"
    )
    [peeked] = [line for line in manage(dsn, "shell", "-c", shell).stdout.splitlines() if "peeked" in line]
    assert peeked.split() == ["peeked", str(orders["ada"]), "dict", "1"]

    worker = subprocess.Popen(
        [sys.executable, "manage.py", "courier_worker", "shipping", "--visibility-timeout", "1"],
        cwd=HERE, env={**os.environ, "COURIER_DJANGO_DSN": dsn}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            deadline = time.monotonic() + 30
            while (
                len(courier.completed_messages(c, "shipping")) + len(courier.dead_letters(c, "shipping")) < 3
            ):
                assert time.monotonic() < deadline, "the worker did not settle every message"
                time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=15)
    finally:
        worker.kill()
    assert worker.returncode == 0, out
    assert "acked=2" in out and "poisoned=1" in out

    with psycopg.connect(dsn, autocommit=True) as c:
        acked = {m.payload["order_id"]: m.attempt for m in courier.completed_messages(c, "shipping")}
        dead = {d.payload["order_id"]: d.last_error for d in courier.dead_letters(c, "shipping")}
        s = courier.stats(c, "shipping")
        shipments = c.execute("SELECT order_id, count(*) FROM shop_shipment GROUP BY order_id").fetchall()
        status = dict(c.execute("SELECT customer, status FROM shop_order").fetchall())
    assert acked == {orders["ada"]: 2, orders["grace"]: 1}  # ada's first attempt was the peek
    assert dead == {orders["nobody"]: f"order {orders['nobody']} has no customer to ship to"}
    assert (s.ready, s.delayed, s.in_flight) == (0, 0, 0)
    assert dict(shipments) == {orders["ada"]: 1, orders["grace"]: 1}
    assert status == {"ada": "shipped", "grace": "shipped", "nobody": "placed"}
