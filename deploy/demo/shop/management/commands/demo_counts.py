from django.core.management.base import BaseCommand

from shop.models import Customer, Order, Product, Subscriber


class Command(BaseCommand):
    help = "Print how many rows each demo table holds."

    def handle(self, *args, **options):
        counts = ", ".join(
            f"{model._meta.verbose_name_plural}: {model.objects.count()}"
            for model in (Customer, Product, Order, Subscriber)
        )
        self.stdout.write(f"The shop database holds {counts}.")
        first = Customer.objects.order_by("pk").first()
        if first is not None:
            self.stdout.write(f"Customer {first.pk}: {first.name} <{first.email}>")
