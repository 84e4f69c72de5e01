import courier
from django.core.management.base import BaseCommand
from django.db import connection

from shop.services import PaymentDeclined, place_order


class Command(BaseCommand):
    help = "Places an order (and enqueues its shipping job) for each customer."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("queue")
        parser.add_argument("customers", nargs="+")
        parser.add_argument("--decline", action="append", default=[], help="a customer whose payment fails")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        queue = options["queue"]
        courier.create_queue(connection, queue, retention=3600, if_not_exists=True)
        for customer in options["customers"]:
            try:
                order = place_order(queue, customer, decline=customer in options["decline"])
                self.stdout.write(f"order {order.pk} for {customer}")
            except PaymentDeclined:
                self.stdout.write(f"payment declined for {customer}: no order, no job")
