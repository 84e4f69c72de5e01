"""examples/sqlalchemy: what happened to every message and every row."""

from __future__ import annotations

import os
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
import shop
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.orm import sessionmaker

from sqlalchemy import URL, Engine, create_engine, func, select

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
    return URL.create(
        "postgresql+psycopg",
        username=d.get("user"),
        host=d.get("host"),
        port=int(d["port"]),
        database=d["dbname"],
    ).render_as_string(hide_password=False)


@pytest.fixture
def engine(dsn: str) -> Any:
    engine = create_engine(url(dsn))
    shop.Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def queue(engine: Engine) -> str:
    name = f"sa_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        courier.create_queue(conn, name, retention=3600)
    return name


def fates(dsn: str, queue: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        out: dict[int, tuple[Any, ...]] = {
            m.id: ("acked", m.attempt) for m in courier.completed_messages(c, queue)
        }
        s = courier.stats(c, queue)
        assert (s.ready, s.delayed, s.in_flight, s.dead) == (0, 0, 0, 0), s
    return out


def test_order_and_job_commit_together_and_roll_back_together(dsn: str, engine: Engine, queue: str) -> None:
    Session = sessionmaker(engine)
    order_id = shop.place_order(Session, queue, "ada")
    with pytest.raises(RuntimeError):
        shop.place_order_that_fails(Session, queue, f"mallory-{queue}")
    with Session() as s:
        assert s.scalar(select(func.count()).where(shop.Order.customer == f"mallory-{queue}")) == 0
    m = shop.lease_one(Session, queue, visibility_timeout=30)
    assert m is not None
    assert shop.lease_one(Session, queue, visibility_timeout=30) is None  # mallory's order enqueued nothing
    assert m.payload == {"order_id": order_id, "customer": "ada"}
    assert shop.ship(Session, m, "test")
    assert fates(dsn, queue) == {m.id: ("acked", 1)}
    with Session() as s:
        assert s.get_one(shop.Order, order_id).status == "shipped"
        assert s.scalars(
            select(shop.Shipment.shipped_by).where(shop.Shipment.order_id == order_id)
        ).all() == ["test"]


def test_late_consumer_strict_ack_rolls_back_its_orm_writes(dsn: str, engine: Engine, queue: str) -> None:
    Session = sessionmaker(engine)
    order_id = shop.place_order(Session, queue, "grace")
    a = shop.lease_one(Session, queue, visibility_timeout=0.5)
    assert a is not None and a.attempt == 1
    time.sleep(0.7)
    b = shop.lease_one(Session, queue, visibility_timeout=30)
    assert b is not None and (b.id, b.attempt) == (a.id, 2)
    assert shop.ship(Session, b, "consumer B")
    assert not shop.ship(Session, a, "consumer A")  # LeaseLost: A's shipment and status roll back
    assert fates(dsn, queue) == {a.id: ("acked", 2)}
    with Session() as s:
        assert s.scalars(
            select(shop.Shipment.shipped_by).where(shop.Shipment.order_id == order_id)
        ).all() == ["consumer B"]


def test_the_program_runs(dsn: str) -> None:
    out = subprocess.run(
        [sys.executable, str(HERE / "shop.py"), url(dsn)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "order for mallory failed (payment declined): no order, no job" in out
    assert "consumer A's late ack for order" in out and "lease lost, rolled back" in out
    assert "shipped by ['consumer B', 'consumer B']; orders for mallory: 0" in out
