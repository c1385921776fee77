"""How the use-cases in ``pgclone.api`` start a job: refuse what the job row
can't hold, sweep lost jobs first, write the job row (:func:`new_job`), fail
the job with the cause when accepting it goes wrong, record what was
resolved, then run it here or enqueue its chain.
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

from pgclone import conf
from pgclone.engine import jobs, runner
from pgclone.exceptions import BrokerUnavailable, InvalidInput, PgCloneError
from pgclone.models import Job
from pgclone.payloads import DumpOptions, RestoreOptions
from pgclone.storage import Storage, keys

logger = logging.getLogger("pgclone")


def default_requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def new_job(
    kind: str,
    *,
    database: str,
    database_name: str,
    config: str | None,
    requested: dict[str, Any],
    requested_by: str | None,
    refused: PgCloneError | None = None,
    on_conflict: Callable[[], PgCloneError] | None = None,
) -> Job:
    """The row of a job asked for with ``requested`` (the caller's own words,
    kept on the job): what it can't hold is refused first, lost jobs are swept.
    ``refused``: recorded as a failed job, and raised. ``on_conflict``: the
    error to record and raise when the row breaks a unique index (one restore
    per database)."""
    texts = {name: value for name, value in requested.items() if not isinstance(value, bool)}
    refuse_unstorable(**texts, database=database, requested_by=requested_by)
    sweep_quietly()
    fields = {
        "database_alias": database,
        "database_name": database_name,
        "config_name": config or "default",
        "options": {"requested": requested},
        "requested_by": requested_by or default_requester(),
    }
    # The steps load with the first job, not when the admin or a command imports this.
    from pgclone.steps.workflows import workflow_for

    steps = workflow_for(kind).step_names
    if refused is not None:
        jobs.create_job(kind, steps, **fields, status=Job.Status.FAILED, error=str(refused))
        raise refused
    try:
        return jobs.create_job(kind, steps, **fields)
    except IntegrityError:
        if on_conflict is None:
            raise
        error = on_conflict()
        jobs.create_job(kind, steps, **fields, status=Job.Status.FAILED, error=str(error))
        raise error from None


def refuse_unstorable(**values: str | list[str] | None) -> None:
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


def sweep_quietly() -> None:
    """Before a new job: a lost job must not hold a restore lock (nor leave debris)."""
    from pgclone import sweeping

    try:
        sweeping.sweep(stored=False)
    except Exception as exc:
        logger.warning("pgclone: the stale-job sweep failed: %s", exc)


@contextlib.contextmanager
def failing(job: Job) -> Iterator[None]:
    """Whatever goes wrong while a job is being accepted fails it, with the cause."""
    try:
        yield
    except Exception as exc:
        jobs.end_job(job.pk, Job.Status.FAILED, runner.describe_error(exc))
        raise


def accept(
    job: Job, resolved: DumpOptions | RestoreOptions, storage: Storage, **fields: Any
) -> None:
    """Record the resolved options (where the dump goes or comes from included)."""
    resolved = dataclasses.replace(resolved, storage_location=storage.location)
    jobs.accept(job, resolved.to_dict(), config_name=resolved.config, **fields)


def launch(
    job: Job,
    resolved: DumpOptions | RestoreOptions,
    storage: Storage,
    *,
    inline: bool,
    on_start: Callable[[Job], Any] | None,
    **fields: Any,
) -> Job:
    """Accept the job with what was resolved, start it, and return it as it is now
    (ended, when ``inline``)."""
    accept(job, resolved, storage, **fields)
    start(job, inline=inline, on_start=on_start)
    job.refresh_from_db()
    return job


def start(job: Job, *, inline: bool, on_start: Callable[[Job], Any] | None) -> None:
    if on_start is not None:
        on_start(job)
    if inline:
        _run_inline(job)
    else:
        _enqueue(job)


def _run_inline(job: Job) -> None:
    from pgclone.steps.workflows import workflow_for

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
    from pgclone.steps.workflows import workflow_for

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
