"""Fill the demo shop with sample data (idempotent: tops up to the asked size)."""

import datetime as dt
import random
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.utils import timezone

from shop.models import Customer, Order, Product, Subscriber


class Command(BaseCommand):
    help = "Create sample customers, products and orders."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=20000)

    def handle(self, *args, **options):
        rng = random.Random(42)
        customers = [
            Customer(email=f"customer{i}@example.com", name=f"Customer {i}") for i in range(500)
        ]
        Customer.objects.bulk_create(customers, ignore_conflicts=True)
        products = [
            Product(
                sku=f"SKU-{i:05d}",
                title=f"Product {i}",
                price=Decimal(rng.randint(100, 9999)) / 100,
            )
            for i in range(200)
        ]
        Product.objects.bulk_create(products, ignore_conflicts=True)
        subscribers = [Subscriber(email=f"reader{i}@example.com") for i in range(300)]
        Subscriber.objects.bulk_create(subscribers, ignore_conflicts=True)
        customer_ids = list(Customer.objects.values_list("id", flat=True))
        missing = options["orders"] - Order.objects.count()
        start = timezone.now() - dt.timedelta(days=365)
        orders = [
            Order(
                customer_id=rng.choice(customer_ids),
                placed_at=start + dt.timedelta(minutes=rng.randint(0, 525600)),
                total=Decimal(rng.randint(100, 500000)) / 100,
                details={"items": rng.randint(1, 9), "note": rng.choice(["gift", "", "express"])},
            )
            for _ in range(max(missing, 0))
        ]
        Order.objects.bulk_create(orders, batch_size=5000)
        self.stdout.write(
            f"Demo data: {Customer.objects.count()} customers, {Product.objects.count()} "
            f"products, {Order.objects.count()} orders."
        )
