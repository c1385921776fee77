"""The use-cases: what the management command, the admin and beat all call.

No workflow lives anywhere else: entry points parse their input, call one
of these functions and render what it returns.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from typing import Any

import kombu.exceptions
from django.db import transaction

from pgclone import jobs, keys, options
from pgclone.exceptions import BrokerUnavailable, PgCloneError
from pgclone.models import Job
from pgclone.steps import dump as dump_steps
from pgclone.storage import get_storage


def default_requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


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
    job = jobs.create_job(
        Job.Kind.DUMP,
        dump_steps.STEP_NAMES,
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
    try:
        resolved = options.resolve_dump_options(
            config=config,
            exclude_models=exclude_models,
            pre_dump_hooks=pre_dump_hooks,
            database=database,
        )
        storage = get_storage()
        storage.check()
    except PgCloneError as exc:
        jobs.end_job(job.pk, Job.Status.FAILED, str(exc))
        raise
    resolved["storage_location"] = storage.location
    Job.objects.filter(pk=job.pk).update(
        options={**job.options, **resolved},
        config_name=resolved["config"],
        database_name=resolved["database_name"],
    )
    if on_start is not None:
        on_start(job)
    if inline:
        _run_inline(dump_steps.run_all, job)
    else:
        _enqueue(job, "dump")
    job.refresh_from_db()
    return job


def _run_inline(run_all: Any, job: Job) -> None:
    try:
        run_all(job.pk)
    except PgCloneError:
        pass  # recorded on the job, which the caller reports
    except Exception:
        job.refresh_from_db()
        if not job.is_finished:
            raise


def _enqueue(job: Job, kind: str) -> None:
    from pgclone import tasks

    signature = tasks.dump_chain(str(job.pk))

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
        Job.objects.filter(pk=job.pk).update(task_id=result.id or "")

    # In a request with ATOMIC_REQUESTS the worker must not see the job before it exists.
    transaction.on_commit(send)


def ls(database: str | None = None) -> list[keys.DumpKey]:
    """Complete dumps in storage, oldest first; one database's if named."""
    if database is not None:
        keys.validate_database_name(database)
    return get_storage().list_keys(database)


def database_names() -> list[str]:
    """Names of the databases that have at least one complete dump."""
    return sorted({key.database for key in get_storage().list_keys()})


def job(job_id: Any) -> Job:
    return jobs.get_job(job_id)


def recent_jobs(limit: int = 20) -> list[Job]:
    return list(Job.objects.all()[:limit])
