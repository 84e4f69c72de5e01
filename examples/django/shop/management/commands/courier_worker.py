"""The worker as a management command: ``manage.py courier_worker QUEUE``.

Exactly-once: each message's handler runs in ``transaction.atomic()`` on Django's connection, and
the worker acks strictly in that transaction. SIGTERM finishes running handlers (then nacks what
is left); a second SIGTERM stops at once.
"""

import courier
from django.core.management.base import BaseCommand
from django.db import connection

from shop.services import atomic_on_django_connection, ship


def conninfo() -> str:
    s = connection.settings_dict
    parts = {
        "dbname": s["NAME"],
        "user": s["USER"],
        "password": s["PASSWORD"],
        "host": s["HOST"],
        "port": s["PORT"],
    }
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)


class Command(BaseCommand):
    help = "Ships orders: runs a courier worker on QUEUE until SIGTERM."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("queue")
        parser.add_argument("--concurrency", type=int, default=2)
        parser.add_argument("--visibility-timeout", type=float, default=30)

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        worker = courier.Worker(
            conninfo(),
            options["queue"],
            ship,
            concurrency=options["concurrency"],
            visibility_timeout=options["visibility_timeout"],
            wait=1,
            exactly_once=True,
            transaction=atomic_on_django_connection,
        )
        stats = worker.run()
        self.stdout.write(f"worker stopped: {stats}")
