import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Test hook: holds its job until a file appears (how tests keep a job running)."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--timeout", type=float, default=120)

    def handle(self, *args, **options):
        path = Path(options["path"])
        Path(f"{path}.started").touch()
        deadline = time.monotonic() + options["timeout"]
        while not path.exists():
            if time.monotonic() > deadline:
                raise CommandError(f"{path} never appeared")
            time.sleep(0.05)
