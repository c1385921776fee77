"""``manage.py pgclone``: parse, call pgclone.api, render. Nothing else.

Exit codes: 0 success, 1 the job (or the operation) failed, 2 bad usage.
"""

from __future__ import annotations

import atexit
import functools
import gc
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, SystemCheckError
from django.db import OperationalError
from django.utils import timezone

from pgclone import api, humanize, payloads
from pgclone.engine import threads
from pgclone.exceptions import ConfigurationError, InvalidInput, PgCloneError
from pgclone.management.commands import _arguments as arguments
from pgclone.management.commands import _follow as follow
from pgclone.management.commands import _reporting as reporting
from pgclone.models import Job
from pgclone.pg import postgres

USAGE_ERRORS = (InvalidInput, ConfigurationError)


@functools.cache
def end_without_a_last_collection() -> None:
    """Spare the process the garbage collections of the interpreter's shutdown.

    When Python exits it tears its modules down and collects, several times
    over, the 70,000 objects Django, Celery and the drivers made: about 0.1 s
    of a 0.6 s ``manage.py pgclone jobs``, each time a command ends. Frozen first
    (the last thing the command's process does, registered at its start), they
    are left to the system, which frees the whole process at once. Only at
    exit: a process that calls the command and lives on keeps its collector.
    pgclone removes what it creates explicitly, never by a finalizer.
    """
    atexit.register(gc.freeze)


class Command(BaseCommand):
    help = "Dump and restore PostgreSQL databases as background jobs."

    def add_arguments(self, parser: CommandParser) -> None:
        arguments.add_subcommands(parser)

    def execute(self, *args: Any, **options: Any) -> Any:
        end_without_a_last_collection()
        if options.get("subcommand") == "keygen":
            options["skip_checks"] = True  # a key is what fixes pgclone.E010
        return super().execute(*args, **options)

    def check(self, *args: Any, **kwargs: Any) -> None:
        """A system check error is a configuration problem: exit status 2, as bad usage."""
        try:
            super().check(*args, **kwargs)
        except SystemCheckError as exc:
            raise SystemCheckError(str(exc), returncode=2) from None

    def handle(self, *args: Any, **options: Any) -> None:
        handler = getattr(self, "handle_" + options["subcommand"].replace("-", "_"))
        try:
            handler(options)
        except USAGE_ERRORS as exc:
            raise CommandError(str(exc), returncode=2) from exc
        except PgCloneError as exc:
            raise CommandError(str(exc), returncode=1) from exc
        except OperationalError as exc:
            raise CommandError(
                f"Can't reach the database that holds pgclone's jobs: {str(exc).strip()}. "
                "If a restore's swap was cut short it may still refuse connections: "
                "`manage.py pgclone sweep` re-opens it.",
                returncode=1,
            ) from exc

    # dump -------------------------------------------------------------------

    def handle_dump(self, options: dict[str, Any]) -> None:
        request = {
            "config": options["config"],
            "exclude_models": options["exclude_models"],
            "pre_dump_hooks": options["pre_dump_hooks"],
            "database": options["database"],
        }
        self._start(api.dump, request, options)

    def handle_restore(self, options: dict[str, Any]) -> None:
        if options["interactive"] and sys.stdin.isatty():
            self._confirm(options["target"], options["database"])
        request = {
            "target": options["target"],
            "config": options["config"],
            "pre_swap_hooks": options["pre_swap_hooks"],
            "reversible": options["reversible"],
            "database": options["database"],
        }
        self._start(api.restore, request, options)

    def handle_copy(self, options: dict[str, Any]) -> None:
        request = {
            "target": options["target"],
            "new_name": options["new_name"],
            "config": options["config"],
            "database": options["database"],
        }
        self._start(api.copy, request, options)

    def _confirm(self, target: str, alias: str) -> None:
        """As the admin does: the database's name, typed, before it is replaced."""
        name = postgres.conn_info(alias).name
        self.stdout.write(
            f"This replaces database {name!r} (alias {alias}) with {target}: its data, "
            "users and sessions come from there. Type the database's name to go on "
            "(or run with --noinput)."
        )
        try:
            answer = input(f"{name}: ")
        except EOFError:
            answer = ""
        if answer.strip() != name:
            raise CommandError(f"Not restored: {answer.strip()!r} is not {name!r}.", returncode=1)

    def _start(self, start: Any, request: dict[str, Any], options: dict[str, Any]) -> None:
        if options["inline"]:
            job = self._run_inline(start, request)
        else:
            job = start(**request)
            if not options["wait"]:
                self.stdout.write(str(job.pk))
                self.stderr.write(
                    f"Enqueued {job.kind} job {job.pk}. Follow it with: "
                    f"manage.py pgclone tail {job.pk}"
                )
                return
            self.stdout.write(f"{self._describe(job)}: enqueued as job {job.pk}")
            job = self._follow(job)
        self._report(job)

    def _run_inline(self, start: Any, request: dict[str, Any]) -> Job:
        # The job runs here in the main thread (so Ctrl-C stops pg_dump); a
        # thread renders its progress from the job rows, as --wait does.
        stop = threading.Event()
        followers: list[threading.Thread] = []

        def on_start(job: Job) -> None:
            followers.append(threads.start(self._follow_until, job.pk, stop, name="pgclone-follow"))

        try:
            return start(**request, inline=True, on_start=on_start)
        except KeyboardInterrupt:
            raise CommandError(
                "Interrupted: the job was cancelled and what it had created removed.",
                returncode=130,
            ) from None
        finally:
            stop.set()
            for follower in followers:
                follower.join(timeout=10)

    def _follow_until(self, job_id: Any, stop: threading.Event) -> None:
        follow.follow(job_id, self.stdout, tty=self.stdout.isatty(), stop=stop, on_silent=api.sweep)

    def _follow(self, job: Job) -> Job:
        try:
            return follow.follow(job.pk, self.stdout, tty=self.stdout.isatty(), on_silent=api.sweep)
        except KeyboardInterrupt:
            self.stderr.write(
                f"\nStopped following; job {job.pk} goes on. "
                f"Follow it again with: manage.py pgclone tail {job.pk}"
            )
            raise CommandError("Interrupted.", returncode=130) from None

    @staticmethod
    def _describe(job: Job) -> str:
        if job.kind == Job.Kind.VERIFY:
            return f"Trial restore of {job.dump_key}"
        if job.options.get("copy_to"):
            return f"Copy of {job.dump_key} into {job.database_name!r}"
        return f"{job.kind.capitalize()} of database {job.database_name or job.database_alias!r}"

    def _report(self, job: Job) -> None:
        job.refresh_from_db()
        took = humanize.human_seconds(job.duration)
        if job.status == Job.Status.SUCCEEDED and job.kind == Job.Kind.DUMP:
            size = humanize.human_bytes(payloads.manifest_of(job).size)
            self.stdout.write(f"Dump succeeded in {took}: {job.dump_key} ({size})")
            return
        if job.status == Job.Status.SUCCEEDED and job.kind == Job.Kind.VERIFY:
            compared = job.steps.get(name="compare").message
            self.stdout.write(
                f"Trial restore succeeded in {took}: {job.dump_key} restored into a scratch "
                f"database (dropped since). {compared}. Recorded beside the dump."
            )
            return
        if job.status == Job.Status.SUCCEEDED and job.options.get("copy_to"):
            self.stdout.write(
                f"Copy succeeded in {took}: database {job.database_name!r} holds {job.dump_key}"
            )
            return
        if job.status == Job.Status.SUCCEEDED:
            source = payloads.restore_options(job).source
            what = source.key or source.label
            window = job.result.get("swap_window_ms", 0)
            self.stdout.write(
                f"Restore succeeded in {took}: {job.database_name!r} now holds {what} "
                f"(new connections waited {window:.0f} ms during the swap)"
            )
            return
        failed_step = job.steps.filter(status="failed").first()
        where = f" in step {failed_step.name}" if failed_step else ""
        raise CommandError(
            f"{job.kind.capitalize()} job {job.pk} {job.status}{where}: {job.error}", returncode=1
        )

    # ls ---------------------------------------------------------------------

    def handle_ls(self, options: dict[str, Any]) -> None:
        if options["local"]:
            sources = api.local_sources(options["database"])
            if options["long"]:
                lines = reporting.local_table(sources, api.local_sizes(options["database"]))
                lines += reporting.kept_table(api.kept_copies(options["database"]))
            else:
                lines = [t if t == f":{name}" else f"{t}  ({name})" for t, name in sources]
        elif options["only_db_names"]:
            names = api.database_names()
            lines = [name for name in names if options["db_name"] in (None, name)]
        elif options["long"]:
            infos = api.dump_infos(options["db_name"])
            lines = reporting.dumps_table(infos)
            for note in reporting.damage_notes(infos):
                self.stderr.write(note)
        else:
            lines = [str(key) for key in api.ls(options["db_name"])]
        for line in lines:
            self.stdout.write(line)

    # jobs -------------------------------------------------------------------

    def handle_jobs(self, options: dict[str, Any]) -> None:
        for line in reporting.jobs_table(api.recent_jobs(options["limit"])):
            self.stdout.write(line)

    def handle_show(self, options: dict[str, Any]) -> None:
        job = api.job(options["job_id"])
        self.stdout.write(f"Job {job.pk}")
        fields = [
            ("kind", job.kind),
            ("status", job.status),
            ("database", f"{job.database_name} (alias {job.database_alias})"),
            ("config", job.config_name),
            ("dump key", reporting.dump_key_line(job)),
            ("requested by", job.requested_by or "-"),
            ("created", timezone.localtime(job.created_at).isoformat(timespec="seconds")),
            ("duration", humanize.human_seconds(job.duration)),
            ("worker", job.worker_hostname or "-"),
        ]
        for label, value in fields:
            self.stdout.write(f"  {label + ':':<14}{value}")
        self.stdout.write("  steps:")
        for step in job.steps.all():
            line = f"    {step.name:<14}{step.status:<10}{humanize.human_seconds(step.duration):>8}"
            line += f"  {step.worker_hostname}" if step.worker_hostname else ""
            self.stdout.write(line + (f"  {step.message}" if step.message else ""))
        if job.error:
            self.stdout.write(f"  error:\n    {job.error.replace(chr(10), chr(10) + '    ')}")

    def handle_tail(self, options: dict[str, Any]) -> None:
        job = api.job(options["job_id"])
        self.stdout.write(f"{self._describe(job)}: job {job.pk} ({job.status})")
        self._report(self._follow(job))

    def handle_cancel(self, options: dict[str, Any]) -> None:
        self.stdout.write(reporting.cancelled_line(api.cancel(options["job_id"])))

    def handle_prune(self, options: dict[str, Any]) -> None:
        pruning = api.prune(dry_run=options["dry_run"], database=options["db_name"])
        verb = "Would delete" if options["dry_run"] else "Deleted"
        for key in pruning.deleted:
            self.stdout.write(f"{verb} {key}")
        if not pruning.deleted:
            self.stdout.write("Nothing to prune.")
        for line in pruning.left_alone_lines():
            self.stdout.write(line)

    def handle_verify(self, options: dict[str, Any]) -> None:
        targets = self._verify_targets(options)
        if options["restore"]:
            for target in targets:
                request = {
                    "target": target,
                    "config": options["config"],
                    "database": options["database"],
                }
                self._start(api.trial_restore, request, options)
            return
        if options["leaks"]:
            for target in targets:
                proof = api.verify_leaks(target, options["database"])
                same = proof["same_rules"]
                rules = "" if same else " (the config's rules differ from the dump's)"
                self.stdout.write(
                    f"{target}: no leak found: {proof['sample']} current values of "
                    f"{proof['columns']} scrubbed columns searched{rules}."
                )
            return
        for target in targets:
            manifest = api.verify(target)
            if not manifest["looked_inside"]:
                self.stdout.write(reporting.verified_outside(target, manifest))
                continue
            self.stdout.write(
                f"{target} is sound: {humanize.human_bytes(manifest['size'])}, "
                f"SHA-256 {manifest['sha256'][:16]}…, {manifest['archive_entries']} archive "
                f"entries, made by {manifest.get('pg_dump_version', 'pg_dump')}."
            )
            for table, rows in (manifest.get("planned_tables") or {}).items():
                self.stdout.write(f"  {table}: {rows} rows, written by the dump's plan")

    @staticmethod
    def _verify_targets(options: dict[str, Any]) -> list[str]:
        key, latest = options["key"], options["latest"]
        if (key is None) == (latest is None):
            raise InvalidInput("Name one dump: a KEY, or --latest [DB_NAME].")
        if key is not None:
            return [key] if options["restore"] else [str(api.named_dump(key))]
        names = [latest] if latest else api.database_names()
        if not names:
            raise InvalidInput("There are no dumps in storage to verify.")
        return [str(api.named_dump(name)) for name in names]

    def handle_health(self, options: dict[str, Any]) -> None:
        found = api.health(options["db_names"] or None, max_age=options["max_age"])
        if not found:
            raise CommandError("No dumps in storage: nothing is backed up.", returncode=1)
        now = timezone.now()
        for database in found:
            self.stdout.write(database.line(now))
        unhealthy = [database.name for database in found if not database.healthy]
        if unhealthy:
            raise CommandError(f"Unhealthy: {', '.join(unhealthy)}.", returncode=1)

    def handle_keygen(self, options: dict[str, Any]) -> None:
        identity, recipient = api.keygen()
        # stdout is an identity file as it is (comments, then the key): `> FILE` keeps it.
        for line in reporting.identity_file(identity, recipient, timezone.now()):
            self.stdout.write(line)
        self.stderr.write(reporting.keygen_explanation(recipient))

    def handle_scrub_check(self, options: dict[str, Any]) -> None:
        if options["skeleton"] and not options["config"]:
            raise CommandError("--skeleton needs --config NAME: the config to complete.")
        found = api.scrub_check(
            options["config"], database=options["database"], skeleton=options["skeleton"]
        )
        if options["skeleton"]:
            (checked,) = found
            self.stdout.write(checked.skeleton or "# Every column is decided: nothing to add.")
        else:
            for line in reporting.scrub_check_lines(found):
                self.stdout.write(line)
        undecided = sum(len(checked.review.undecided) for checked in found)
        if undecided:
            raise CommandError(
                f"{undecided} column(s) that can hold personal or secret data are undecided: "
                "give each a scrub rule ('keep' keeps it as it is), keep or leave out its table "
                "by name ('tables', 'exclude_tables'), or exclude its model. A scrubbed dump "
                "is refused until then.",
                returncode=1,
            )
        if not options["skeleton"]:
            checked_names = ", ".join(c.config for c in found) or "none (no config has 'scrub')"
            self.stdout.write(f"Every column is decided. Checked: {checked_names}.")

    def handle_sweep(self, options: dict[str, Any]) -> None:
        swept = api.sweep()
        for job in swept:
            self.stdout.write(f"{job.kind} job {job.pk}: {job.error}")
        if not swept:
            self.stdout.write("No lost jobs.")
