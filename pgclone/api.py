"""The use-cases: what the management command, the admin and beat all call.

No workflow lives anywhere else: entry points parse their input, call one
of these functions and render what it returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import kombu.exceptions
from django.db import IntegrityError, transaction
from django.utils import timezone

from pgclone import (
    conf,
    humanize,
    jobs,
    keys,
    options,
    postgres,
    privileges,
    retention,
    runner,
)
from pgclone.exceptions import (
    BrokerUnavailable,
    InvalidInput,
    PgCloneError,
    RestoreRefused,
)
from pgclone.models import Job
from pgclone.payloads import DumpOptions, RestoreOptions

# Re-exported: the command and the admin list what `restore :…` can copy through the API.
from pgclone.sources import local_sizes as local_sizes
from pgclone.sources import local_sources as local_sources
from pgclone.sources import resolve_source
from pgclone.steps import DUMP, RESTORE, workflow_for
from pgclone.storage import get_storage
from pgclone.storage.base import DumpInfo

logger = logging.getLogger("pgclone")


def default_requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _refuse_unstorable(**values: str | list[str] | None) -> None:
    """Refuse, before the job row is written, what the row can't hold: PostgreSQL
    stores no NUL character in text or JSON, and the config name must fit its column."""
    for name, value in values.items():
        texts = [value] if isinstance(value, str) else list(value or [])
        if any("\x00" in str(text) for text in texts):
            raise InvalidInput(
                f"{name}={value!r} holds a NUL character (\\x00), which PostgreSQL can't "
                "store: remove it."
            )
    config = values.get("config")
    if isinstance(config, str) and config:
        keys.validate_config_name(config)


def dump(
    *,
    config: str | None = None,
    exclude_models: list[str] | None = None,
    pre_dump_hooks: list[str] | None = None,
    database: str = "default",
    requested_by: str | None = None,
    inline: bool = False,
    on_start: Callable[[Job], Any] | None = None,
) -> Job:
    """Start a dump job (enqueued, or run here when ``inline``) and return it.

    Bad input fails the job at once and raises, so nothing is enqueued.
    With ``inline`` the job has ended when this returns; a failure is on the
    returned job, not raised. ``on_start(job)`` is called once the job is
    accepted, before it runs (the command uses it to show progress).
    """
    _refuse_unstorable(
        config=config,
        exclude_models=exclude_models,
        pre_dump_hooks=pre_dump_hooks,
        database=database,
        requested_by=requested_by,
    )
    _sweep_quietly()
    job = jobs.create_job(
        Job.Kind.DUMP,
        DUMP.step_names,
        database_alias=database,
        database_name="",
        config_name=config or "default",
        options={
            "requested": {
                "config": config,
                "exclude_models": exclude_models,
                "pre_dump_hooks": pre_dump_hooks,
            }
        },
        requested_by=requested_by or default_requester(),
    )
    with _failing(job):
        resolved = options.resolve_dump_options(
            config=config,
            exclude_models=exclude_models,
            pre_dump_hooks=pre_dump_hooks,
            database=database,
        )
        storage = get_storage()
        storage.check()
    _accept(job, resolved, storage, database_name=resolved.database_name)
    _start(job, inline=inline, on_start=on_start)
    job.refresh_from_db()
    return job


def restore(
    target: str,
    *,
    config: str | None = None,
    pre_swap_hooks: list[str] | None = None,
    reversible: bool = False,
    database: str = "default",
    requested_by: str | None = None,
    inline: bool = False,
    on_start: Callable[[Job], Any] | None = None,
) -> Job:
    """Start a restore of ``target`` into the ``database`` alias; see ``dump``.

    Refused (a failed job, and RestoreRefused raised) when restores are
    disabled or another restore of the same database is under way.
    """
    _refuse_unstorable(
        target=target,
        config=config,
        pre_swap_hooks=pre_swap_hooks,
        database=database,
        requested_by=requested_by,
    )
    live = postgres.conn_info(database)
    _sweep_quietly()
    request = {
        "target": target,
        "config": config,
        "pre_swap_hooks": pre_swap_hooks,
        "reversible": reversible,
    }
    fields = {
        "database_alias": database,
        "database_name": live.name,
        "config_name": config or "default",
        "options": {"requested": request},
        "requested_by": requested_by or default_requester(),
    }
    if not conf.allow_restore():
        error = RestoreRefused()
        jobs.create_job(Job.Kind.RESTORE, RESTORE.step_names, **fields,
                        status=Job.Status.FAILED, error=str(error))  # fmt: skip
        raise error
    try:
        job = jobs.create_job(Job.Kind.RESTORE, RESTORE.step_names, **fields)
    except IntegrityError:
        running = (
            Job.objects.active().filter(kind=Job.Kind.RESTORE, database_name=live.name).first()
        )
        error = RestoreRefused(
            f"A restore of database {live.name!r} is already under way"
            + (f" (job {running.pk}, {_liveliness(running)})" if running else "")
            + ". Wait for it to end, or stop it with `manage.py pgclone cancel "
            + (f"{running.pk}`." if running else "JOB_ID`.")
        )
        jobs.create_job(Job.Kind.RESTORE, RESTORE.step_names, **fields,
                        status=Job.Status.FAILED, error=str(error))  # fmt: skip
        raise error from None
    with _failing(job):
        privileges.refuse_privileged(live)
        _refuse_while_in_use(job, live)
        resolved = options.resolve_restore_options(
            config=config, pre_swap_hooks=pre_swap_hooks, reversible=reversible, database=database
        )
        storage = get_storage()
        resolved = dataclasses.replace(resolved, source=resolve_source(target, live.name))
    _accept(job, resolved, storage, dump_key=resolved.source.key)
    _start(job, inline=inline, on_start=on_start)
    job.refresh_from_db()
    return job


def _refuse_while_in_use(job: Job, live: postgres.ConnInfo) -> None:
    """The swap ends every session on the database it replaces: refuse a restore
    while another job uses that database (or, when it holds pgclone's job
    tables, while any other job runs: they all write their progress there)."""
    others = jobs.using_database(job, everything=jobs.holds_jobs(live), running_only=False)
    if others:
        other = others[0]
        raise RestoreRefused(
            f"Job {other.pk} ({other.kind} of {other.database_name or other.database_alias!r}, "
            f"{_liveliness(other)}) uses database {live.name!r}, and the swap would end its "
            "sessions. Restore once it is over, or stop it with `manage.py pgclone cancel "
            f"{other.pk}`."
        )


def _liveliness(job: Job) -> str:
    if job.heartbeat_at is None:
        return job.status
    age = (timezone.now() - job.heartbeat_at).total_seconds()
    return f"{job.status}, last heartbeat {humanize.human_seconds(age)} ago"


def sweep() -> list[Job]:
    """Fail jobs whose worker was lost and remove what they left; return them."""
    from pgclone import sweeping

    return sweeping.sweep()


def _sweep_quietly() -> None:
    """Before a new job: a lost job must not hold a restore lock (nor leave debris)."""
    try:
        sweep()
    except Exception as exc:
        logger.warning("pgclone: the stale-job sweep failed: %s", exc)


@contextlib.contextmanager
def _failing(job: Job) -> Iterator[None]:
    """Whatever goes wrong while a job is being accepted fails it, with the cause."""
    try:
        yield
    except Exception as exc:
        jobs.end_job(job.pk, Job.Status.FAILED, runner.describe_error(exc))
        raise


def _accept(job: Job, resolved: DumpOptions | RestoreOptions, storage: Any, **fields: Any) -> None:
    """Record the resolved options (where the dump goes or comes from included)."""
    resolved = dataclasses.replace(resolved, storage_location=storage.location)
    jobs.accept(job, resolved.to_dict(), config_name=resolved.config, **fields)


def _start(job: Job, *, inline: bool, on_start: Callable[[Job], Any] | None) -> None:
    if on_start is not None:
        on_start(job)
    if inline:
        _run_inline(job)
    else:
        _enqueue(job)


def _run_inline(job: Job) -> None:
    try:
        workflow_for(job.kind).run_all(job.pk)
    except PgCloneError:
        pass  # recorded on the job, which the caller reports
    except Exception:
        job.refresh_from_db()
        if not job.is_finished:
            raise


def _enqueue(job: Job) -> None:
    from pgclone import checks

    checks.require_celery_app(job)
    kind = job.kind
    signature = workflow_for(kind).chain(str(job.pk), queue=conf.celery_queue())

    def send() -> None:
        try:
            result = signature.apply_async()
        except (kombu.exceptions.OperationalError, OSError) as exc:
            error = BrokerUnavailable(
                f"The Celery broker did not accept the {kind} job ({exc}). Start the broker "
                "(Redis) and a worker, or run the job in this process with --inline."
            )
            jobs.end_job(job.pk, Job.Status.FAILED, str(error))
            raise error from exc
        jobs.set_task_id(job.pk, result.id or "")

    # In a request with ATOMIC_REQUESTS the worker must not see the job before it exists.
    transaction.on_commit(send)


def ls(database: str | None = None) -> list[keys.DumpKey]:
    """Complete dumps in storage, oldest first; one database's if named."""
    if database is not None:
        keys.validate_database_name(database)
    return get_storage().list_keys(database)


def dump_infos(database: str | None = None) -> list[DumpInfo]:
    """Complete dumps with their manifests (``ls --long``), oldest first; a dump
    whose manifest is damaged comes with why (it can't be restored)."""
    if database is not None:
        keys.validate_database_name(database)
    return get_storage().infos(database)


def database_names() -> list[str]:
    """Names of the databases that have at least one complete dump."""
    return sorted({key.database for key in get_storage().list_keys()})


def prune(*, dry_run: bool = False, database: str | None = None) -> list[keys.DumpKey]:
    """Apply the retention rules of PGCLONE_DUMP_CONFIGS to the dumps in storage.

    Returns what was deleted, or with ``dry_run`` what would be.
    """
    if database is not None:
        keys.validate_database_name(database)
    storage = get_storage()
    if dry_run:
        return retention.expired(storage, database=database)
    return retention.prune(storage, database=database)


def verify(key_text: str) -> dict[str, Any]:
    """Check a dump without restoring it: complete, its checksum, an archive
    that pg_restore can read, and foreign keys that a restore can re-create
    (see ``pgclone.verifying``). Raises DumpNotFound or DumpDamaged; returns
    the manifest with the number of archive entries added."""
    from pgclone import verifying

    return verifying.verify(get_storage(), keys.parse_key(key_text))


def keygen() -> tuple[str, str]:
    """A new age identity (secret) and its recipient (public), for encrypted dumps."""
    from pgclone import encryption

    return encryption.generate()


def cancel(job_id: Any, *, requested_by: str | None = None) -> Job:
    """Cancel a pending or running job; its worker stops it within seconds."""
    found = jobs.get_job(job_id)
    uncancellable = workflow_for(found.kind).uncancellable
    if not jobs.cancel(found, requested_by or default_requester(), uncancellable):
        found.refresh_from_db()
        if found.is_finished:
            raise PgCloneError(f"Job {found.pk} has already ended ({found.status}).")
        raise PgCloneError(
            f"Job {found.pk} is swapping databases, which takes a moment and can't be "
            "stopped half-way; it is too late to cancel it."
        )
    found.refresh_from_db()
    return found


def job(job_id: Any) -> Job:
    return jobs.get_job(job_id)


def recent_jobs(limit: int = 20) -> list[Job]:
    return list(Job.objects.all()[:limit])
