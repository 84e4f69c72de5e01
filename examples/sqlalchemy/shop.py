"""courier with the SQLAlchemy 2 ORM: an order and its shipping job in one session transaction,
and a consumer that writes through the ORM and acks strictly in the same transaction.

    python shop.py postgresql+psycopg://user@host:port/dbname

courier's functions take the Session itself: the call runs on the session's connection, inside
its transaction, after flushing pending ORM changes (as a query would).
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import timedelta

import courier
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.orm import Session as OrmSession

from sqlalchemy import ForeignKey, String, create_engine, func, select


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "sa_order"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="placed")


class Shipment(Base):
    __tablename__ = "sa_shipment"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sa_order.id"))
    shipped_by: Mapped[str] = mapped_column(String(100))


def place_order(Session: sessionmaker[OrmSession], queue: str, customer: str) -> int:
    """The order row and its job commit together, or neither does."""
    with Session.begin() as session:
        order = Order(customer=customer)
        session.add(order)
        session.flush()  # order.id, for the payload
        courier.enqueue(session, queue, {"order_id": order.id, "customer": customer})
        return order.id


def place_order_that_fails(Session: sessionmaker[OrmSession], queue: str, customer: str) -> None:
    """Something fails after the enqueue: the rollback takes the job with it."""
    with Session.begin() as session:
        session.add(Order(customer=customer))
        courier.enqueue(session, queue, {"customer": customer})
        raise RuntimeError("payment declined")


def lease_one(
    Session: sessionmaker[OrmSession], queue: str, visibility_timeout: float
) -> courier.Message | None:
    """Leases in a transaction of its own, so the lease (and its timeout) holds from now on."""
    with Session.begin() as session:
        messages = courier.lease(session, queue, visibility_timeout=visibility_timeout)
    return messages[0] if messages else None


def ship(
    Session: sessionmaker[OrmSession], message: courier.Message, worker: str, stall: float = 0.0
) -> bool:
    """The consumer's work and its strict ack in one transaction. False if the lease was lost:
    then the session rolled back and the shipment was never written."""
    try:
        with Session.begin() as session:
            order = session.get_one(Order, message.payload["order_id"])
            order.status = "shipped"
            session.add(Shipment(order_id=order.id, shipped_by=worker))
            time.sleep(stall)  # a slow consumer: its lease may run out meanwhile
            courier.ack(session, message.receipt, strict=True)  # flushes the ORM writes first
        return True
    except courier.LeaseLost:
        return False


def main(url: str) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    queue = f"sa_shipping_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        courier.create_queue(conn, queue, retention=timedelta(hours=1))

    orders = [place_order(Session, queue, c) for c in ("ada", "grace")]
    try:
        place_order_that_fails(Session, queue, "mallory")
    except RuntimeError as err:
        print(f"order for mallory failed ({err}): no order, no job")

    late = lease_one(Session, queue, visibility_timeout=1)
    assert late is not None
    time.sleep(1.2)  # its lease runs out; another consumer takes the message over
    while (m := lease_one(Session, queue, visibility_timeout=30)) is not None:
        ship(Session, m, "consumer B")
        print(f"consumer B shipped order {m.payload['order_id']} (attempt {m.attempt})")
    ok = ship(Session, late, "consumer A")
    outcome = "ok" if ok else "lease lost, rolled back"
    print(f"consumer A's late ack for order {late.payload['order_id']}: {outcome}")

    with Session() as session:
        shipped = session.scalars(select(Shipment.shipped_by).order_by(Shipment.order_id)
                                  .where(Shipment.order_id.in_(orders))).all()  # fmt: skip
        total = session.scalar(select(func.count()).select_from(Order).where(Order.customer == "mallory"))
    print(f"orders {orders} shipped by {shipped}; orders for mallory: {total}")
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1])
