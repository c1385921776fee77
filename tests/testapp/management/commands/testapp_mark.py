from django.core.management.base import BaseCommand

from tests.testapp.models import Mark


class Command(BaseCommand):
    help = "Test hook: writes a Mark row on the database it runs against."

    def add_arguments(self, parser):
        parser.add_argument("--note", default="hook")

    def handle(self, *args, **options):
        Mark.objects.create(note=options["note"])
        self.stdout.write(f"marked {options['note']}")
