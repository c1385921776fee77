from django.core.management.base import BaseCommand
from django.db import connection

from tests.testapp.models import Mark


class Command(BaseCommand):
    help = "Test hook: writes a Mark row on the database it runs against."

    def add_arguments(self, parser):
        parser.add_argument("--note", default="hook")
        parser.add_argument("--setting", help="Note the value of this setting instead.")

    def handle(self, *args, **options):
        note = options["note"]
        if options["setting"]:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting(%s)", [options["setting"]])
                note = cursor.fetchone()[0]
        Mark.objects.create(note=note)
        self.stdout.write(f"marked {note}")
