"""Placing an order and shipping it, with courier in Django's transactions.

No ``transaction.on_commit`` here. With a broker outside the database, Django code enqueues in
``on_commit`` so a job never exists for an order that rolled back — and loses the job if the
process dies between the commit and the callback, or if the broker is down then. courier's enqueue
is a row written in the same transaction as the order: ``atomic`` commits both or neither, so
there is nothing to defer and no window to lose a job in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import courier
from django.db import close_old_connections, connection, transaction

from .models import Order, Shipment


class PaymentDeclined(Exception):
    pass


def place_order(queue: str, customer: str, *, decline: bool = False) -> Order:
    with transaction.atomic():
        order = Order.objects.create(customer=customer)
        courier.enqueue(connection, queue, {"order_id": order.pk})
        if decline:
            raise PaymentDeclined(customer)  # the order and its job roll back together
    return order


def ship(job: courier.Job) -> None:
    """The worker's handler, run inside ``atomic_on_django_connection``: its ORM writes and the
    worker's strict ack commit together."""
    order = Order.objects.select_for_update().get(pk=job.payload["order_id"])
    if order.customer == "nobody":
        raise courier.Poison(f"order {order.pk} has no customer to ship to")
    order.status = "shipped"
    order.save()
    Shipment.objects.create(order=order, shipped_by=f"worker {os.getpid()}")


@contextmanager
def atomic_on_django_connection() -> Iterator[object]:
    """The worker's transaction in exactly-once mode: Django's own connection (one per handler
    thread), in ``atomic``. A connection that died since the last message is replaced first."""
    close_old_connections()
    with transaction.atomic():
        yield connection
