"""Every change of a job's state, and nothing else writes one.

Each transition is one conditional update (or a few in one transaction), so
that two workers, a sweep and a person cancelling can race without one
undoing another: a transition that finds the job no longer in the state it
expects changes nothing and says so (it returns False). The runner
(``pgclone.engine.runner``), the sweep, the steps and the API call these; the
queries that find jobs are on ``Job.objects`` (``pgclone.models``).
"""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from pgclone import conf
from pgclone.engine import claims, notify, wakeups
from pgclone.exceptions import JobNotFound
from pgclone.models import Job, JobStep

ACTIVE = Job.ACTIVE


# Accepting a job ----------------------------------------------------------------------------


def create_job(
    kind: str,
    step_names: Sequence[str],
    *,
    database_alias: str,
    database_name: str,
    config_name: str,
    options: dict[str, Any],
    requested_by: str = "",
    dump_key: str = "",
    status: str = Job.Status.PENDING,
    error: str = "",
) -> Job:
    """A new job with its steps, all pending (or ended at once, given a status)."""
    ended = status in Job.FINISHED
    with transaction.atomic():
        job = Job.objects.create(
            kind=kind,
            status=status,
            error=error,
            finished_at=timezone.now() if ended else None,
            database_alias=database_alias,
            database_name=database_name,
            config_name=config_name,
            options=options,
            requested_by=requested_by,
            dump_key=dump_key,
        )
        JobStep.objects.bulk_create(
            JobStep(
                job=job,
                position=position,
                name=name,
                status=JobStep.Status.SKIPPED if ended else JobStep.Status.PENDING,
            )
            for position, name in enumerate(step_names)
        )
    return job


def accept(job: Job, options: dict[str, Any], **fields: Any) -> None:
    """Record the resolved options of a job (and fields they decide)."""
    job.options = {**job.options, **options}
    Job.objects.filter(pk=job.pk).update(options=job.options, **fields)


def set_task_id(job_id: Any, task_id: str) -> None:
    Job.objects.filter(pk=job_id).update(task_id=task_id)


def get_job(job_id: Any) -> Job:
    """A job by id, or by a unique prefix (at least 4 characters) of its id."""
    text = str(job_id).strip().lower()
    try:
        return Job.objects.get(pk=uuid.UUID(text))
    except ValueError:
        pass  # not a whole id: look it up as a prefix below
    except Job.DoesNotExist:
        raise JobNotFound(f"No job {job_id!r}: list jobs with `manage.py pgclone jobs`.") from None
    if len(text) >= 4:
        matches = list(Job.objects.with_id_prefix(text)[:2])
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise JobNotFound(f"{job_id!r} matches several jobs: give more of the id.")
    raise JobNotFound(f"No job {job_id!r}: list jobs with `manage.py pgclone jobs`.")


# Running a step ------------------------------------------------------------------------------


def claim_step(job: Job, step: JobStep, hostname: str | None) -> bool:
    """Take the step for this worker, atomically: only one delivery runs it.

    A running step is taken over when its heartbeat is stale, or at once when
    the process that claimed it is known to be gone (it ran on this machine).
    """
    now = timezone.now()
    abandoned = now - dt.timedelta(seconds=conf.stale_job_seconds())
    claimable = models.Q(status=JobStep.Status.PENDING) | models.Q(
        status=JobStep.Status.RUNNING, job__heartbeat_at__lt=abandoned
    )
    if job.worker_process and claims.is_gone(job.worker_process):
        claimable |= models.Q(status=JobStep.Status.RUNNING, job__worker_process=job.worker_process)
    worker = hostname or socket.gethostname()
    with transaction.atomic():
        claimed = (
            JobStep.objects.filter(pk=step.pk)
            .filter(claimable)
            .update(
                status=JobStep.Status.RUNNING,
                started_at=now,
                finished_at=None,
                message="",
                worker_hostname=worker,
            )
        )
        started = claimed and Job.objects.filter(pk=job.pk, status__in=ACTIVE).update(
            status=Job.Status.RUNNING,
            started_at=job.started_at or now,
            current_step=step.name,
            worker_hostname=worker,
            worker_process=claims.this_process(),
            heartbeat_at=now,
            progress_done=None,
            progress_total=None,
            progress_label="",
        )
        if claimed and not started:
            transaction.set_rollback(True)  # cancelled an instant ago
    if claimed and started:
        wakeups.changed(job.pk)
    if claimed and started and job.started_at is None:
        notify.started(job.pk)
    return bool(claimed and started)


def beat(job_id: Any) -> bool:
    """The running step is alive; False once the job stopped running (cancelled)."""
    running = Job.objects.filter(pk=job_id, status=Job.Status.RUNNING)
    return bool(running.update(heartbeat_at=timezone.now()))


def start_progress(job_id: Any, total: int | None, label: str = "") -> None:
    Job.objects.filter(pk=job_id).update(
        progress_done=0, progress_total=total, progress_label=label
    )
    wakeups.changed(job_id)


def record_progress(job_id: Any, done: int, total: int | None, label: str | None = None) -> bool:
    """How far the step got (a beat too); False once the job stopped running."""
    running = Job.objects.filter(pk=job_id, status=Job.Status.RUNNING)
    fields = {"progress_label": label} if label is not None else {}
    recorded = running.update(
        progress_done=done, progress_total=total, heartbeat_at=timezone.now(), **fields
    )
    if recorded:
        wakeups.changed(job_id)
    return bool(recorded)


def is_cancelled(job_id: Any) -> bool:
    return Job.objects.filter(pk=job_id, status=Job.Status.CANCELLED).exists()


def set_step_message(job: Job, name: str, message: str) -> None:
    JobStep.objects.filter(job=job, name=name).update(message=message)


def update_result(job: Job, **values: Any) -> None:
    """Merge values into ``job.result`` and save them at once (later steps read them)."""
    job.result = {**job.result, **values}
    Job.objects.filter(pk=job.pk).update(result=job.result)


def claim_result(job: Job, name: str, value: Any) -> bool:
    """Set ``job.result[name]``, if it still is ``value``, to None; whether this
    caller did: of two that race to act on it (a worker and the sweep), one does."""
    job.refresh_from_db(fields=["result"])
    result = {**job.result, name: None}
    claimed = Job.objects.filter(pk=job.pk, **{f"result__{name}": value}).update(result=result)
    if claimed:
        job.result = result
    return bool(claimed)


def record_dump_target(job: Job, key: str, database_name: str) -> None:
    """What a dump writes, known once its first step resolved it."""
    Job.objects.filter(pk=job.pk).update(dump_key=key, database_name=database_name)


# Ending --------------------------------------------------------------------------------------


def succeed_step(job_id: Any, name: str) -> None:
    JobStep.objects.filter(job_id=job_id, name=name).update(
        status=JobStep.Status.SUCCEEDED, finished_at=timezone.now()
    )
    wakeups.changed(job_id)


def succeed_job(job_id: Any) -> None:
    if (
        Job.objects.filter(pk=job_id)
        .exclude(status__in=Job.FINISHED)
        .update(status=Job.Status.SUCCEEDED, finished_at=timezone.now(), current_step="")
    ):
        wakeups.changed(job_id)
        notify.ended(job_id)


def end_job(job_id: Any, status: str, error: str = "") -> None:
    """Mark a job as ended (unless it already is) and its unstarted steps as skipped."""
    ended = (
        Job.objects.filter(pk=job_id)
        .exclude(status__in=Job.FINISHED)
        .update(status=status, error=error, finished_at=timezone.now(), current_step="")
    )
    _skip_pending(job_id)
    if ended:
        wakeups.changed(job_id)
        notify.ended(job_id)


def fail_step(job_id: Any, name: str, message: str, *, interrupted: bool = False) -> None:
    """A step failed: so did its job, unless it was cancelled (then the
    cancellation's reason is what both say)."""
    status, reason = Job.objects.filter(pk=job_id).values_list("status", "error").get()
    cancelled = status == Job.Status.CANCELLED or interrupted
    if status == Job.Status.CANCELLED:
        message = reason or "Cancelled."
    JobStep.objects.filter(job_id=job_id, name=name).update(
        status=JobStep.Status.FAILED, finished_at=timezone.now(), message=message
    )
    end_job(job_id, Job.Status.CANCELLED if cancelled else Job.Status.FAILED, message)
    # A job cancelled while a step ran kept that step as current until it stopped.
    Job.objects.filter(pk=job_id).update(current_step="")


def cancel(job: Job, requested_by: str, uncancellable: Collection[str] = ()) -> bool:
    """Mark a job cancelled; its worker stops it within a heartbeat. False if it
    already ended or runs a step that can't be stopped half-way (the swap)."""
    cancelled = (
        Job.objects.filter(pk=job.pk, status__in=ACTIVE)
        .exclude(current_step__in=list(uncancellable))
        .update(
            status=Job.Status.CANCELLED,
            error=f"Cancelled by {requested_by}.",
            finished_at=timezone.now(),
        )
    )
    if cancelled:
        _skip_pending(job.pk)
        wakeups.changed(job.pk)
    return bool(cancelled)


def mark_lost(job: Job, what: str, still: models.Q) -> bool:
    """Fail a running job whose worker was lost, if it is ``still`` in the state
    that made the sweep decide so (it may have beaten again since)."""
    now = timezone.now()
    with transaction.atomic():
        taken = Job.objects.filter(still, pk=job.pk, status=Job.Status.RUNNING)
        if not taken.update(status=Job.Status.FAILED, error=what, finished_at=now):
            return False
        JobStep.objects.filter(job=job, status=JobStep.Status.RUNNING).update(
            status=JobStep.Status.FAILED, finished_at=now, message=what
        )
        _skip_pending(job.pk)
    wakeups.changed(job.pk)
    return True


def take_over(job: Job, still: models.Q) -> bool:
    """Claim a lost job's running step for this process (to finish it), if it
    is ``still`` as the sweep found it."""
    taken = Job.objects.filter(still, pk=job.pk, status=Job.Status.RUNNING)
    return bool(taken.update(heartbeat_at=timezone.now(), worker_process=claims.this_process()))


def expire_waiting(job: Job, what: str) -> bool:
    """Fail a job whose next step no worker took, if it is still waiting."""
    with transaction.atomic():
        waiting = Job.objects.filter(
            pk=job.pk, status=job.status, current_step=job.current_step
        ).exclude(steps__status=JobStep.Status.RUNNING)
        if not waiting.update(
            status=Job.Status.FAILED, error=what, finished_at=timezone.now(), current_step=""
        ):
            return False
        _skip_pending(job.pk)
    wakeups.changed(job.pk)
    return True


def record_cleanup(job: Job, what: str, error: str) -> None:
    """Say what the sweep removed after a job it ended with ``what`` (lost, or
    waiting too long); then the job's end is told, the whole of it."""
    Job.objects.filter(pk=job.pk).update(error=error)
    JobStep.objects.filter(job=job, status=JobStep.Status.FAILED, message=what).update(
        message=error
    )
    notify.ended(job.pk)


def _skip_pending(job_id: Any) -> None:
    JobStep.objects.filter(job_id=job_id, status=JobStep.Status.PENDING).update(
        status=JobStep.Status.SKIPPED
    )


def using_database(job: Job, *, everything: bool, running_only: bool) -> list[Job]:
    """Other active jobs that use ``job``'s database: those of the same database,
    or every one when that database holds the job tables (they all write their
    progress there). ``running_only``: only those running a step right now."""
    others = Job.objects.active().exclude(pk=job.pk)
    if not everything:
        # A trial restore's database_name is the dump's: it uses only its scratch copy.
        others = others.filter(database_name=job.database_name).exclude(kind=Job.Kind.VERIFY)
    if running_only:
        others = others.filter(steps__status=JobStep.Status.RUNNING)
    return list(others.order_by("created_at"))
