from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Test hook that fails."

    def add_arguments(self, parser):
        parser.add_argument("--exit", type=int, default=0, help="Exit with this code instead.")

    def handle(self, *args, **options):
        self.stdout.write("about to fail")
        if options["exit"]:
            raise SystemExit(options["exit"])
        raise CommandError("the hook refused to run")
