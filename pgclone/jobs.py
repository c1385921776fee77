"""Job state transitions, and the runner that every chain step goes through.

A step is a plain function taking a :class:`Job`. ``run_step`` wraps it: it
skips steps of jobs that already ended and steps that already succeeded (a
redelivered task must not redo work), records start, end, duration and the
real cause of a failure, keeps a heartbeat while the step runs, and runs the
job's cleanup when anything fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from django.db import DatabaseError, connections, models, router, transaction
from django.db.models import CharField
from django.db.models.functions import Cast
from django.utils import timezone

from pgclone import claims, conf, postgres, threads
from pgclone.exceptions import DatabaseUnavailable, JobCancelled, JobNotFound, PgCloneError
from pgclone.models import Job, JobStep

logger = logging.getLogger("pgclone")

# A step may return work to do once it is recorded as succeeded (and the job,
# after its last step): slow cleanup nobody needs to wait for.
StepFunction = Callable[[Job], Callable[[], Any] | None]
# Undoes what a job's steps made; says what it removed.
Cleanup = Callable[[Job], list[str]]
ACTIVE = (Job.Status.PENDING, Job.Status.RUNNING)


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
        matches = list(
            Job.objects.annotate(id_text=Cast("id", CharField())).filter(id_text__startswith=text)[
                :2
            ]
        )
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise JobNotFound(f"{job_id!r} matches several jobs: give more of the id.")
    raise JobNotFound(f"No job {job_id!r}: list jobs with `manage.py pgclone jobs`.")


def end_job(job_id: Any, status: str, error: str = "") -> None:
    """Mark a job as ended (unless it already is) and its unstarted steps as skipped."""
    now = timezone.now()
    Job.objects.filter(pk=job_id).exclude(status__in=Job.FINISHED).update(
        status=status, error=error, finished_at=now, current_step=""
    )
    JobStep.objects.filter(job_id=job_id, status=JobStep.Status.PENDING).update(
        status=JobStep.Status.SKIPPED
    )


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, PgCloneError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted (Ctrl-C) before the job finished."
    if isinstance(exc, SystemExit):
        return "The worker was stopped (shut down) before the job finished."
    return f"{type(exc).__name__}: {exc}"


class Progress:
    """Records how far a step got, at most a few times a second."""

    def __init__(self, job_id: Any, total: int | None = None, interval: float = 0.5) -> None:
        self.job_id = job_id
        self.total = total
        self.done = 0
        self.interval = interval
        self._last = 0.0
        Job.objects.filter(pk=job_id).update(progress_done=0, progress_total=total)

    def add(self, amount: int) -> None:
        self.done += amount
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.flush()

    def flush(self) -> None:
        """Save progress; raise JobCancelled once the job stopped running (cancelled)."""
        updated = Job.objects.filter(pk=self.job_id, status=Job.Status.RUNNING).update(
            progress_done=self.done, progress_total=self.total, heartbeat_at=timezone.now()
        )
        if not updated:
            raise JobCancelled()


class Heartbeat:
    """Marks the job alive from a thread of its own while a step runs.

    A thread (with its own database connection) keeps beating while the step
    blocks in a subprocess or a hook, and while the step's own connection is
    routed to another database. When it finds the job cancelled it kills the
    programs the step runs (pg_dump, pg_restore), which makes the step fail.
    """

    def __init__(self, job_id: Any) -> None:
        self.job_id = job_id
        self.children = postgres.current_children()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        self._thread = threads.start(self._run, name="pgclone-heartbeat")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(conf.heartbeat_seconds()):
            try:
                beating = Job.objects.filter(pk=self.job_id, status=Job.Status.RUNNING)
                if not beating.update(heartbeat_at=timezone.now()):
                    for child in list(self.children):
                        child.kill()
            except Exception as exc:  # a missed beat (during a swap…) is not worth failing for
                logger.info("pgclone heartbeat for job %s missed: %s", self.job_id, exc)
                drop_broken_connections()


def drop_broken_connections() -> None:
    """Close connections the server ended (a swap ends every session on the
    database it replaces), so the next query opens a fresh one."""
    for wrapper in connections.all(initialized_only=True):
        usable = wrapper.connection is None or wrapper.in_atomic_block or wrapper.is_usable()
        if not usable:
            wrapper.close()


def run_step(
    job_id: Any,
    name: str,
    function: StepFunction,
    *,
    final: bool = False,
    cleanup: Cleanup | None = None,
    hostname: str | None = None,
) -> bool:
    """Run one step of a job and record what happened; re-raise its failure.

    Returns whether the chain should go on: False when the job has ended
    (failed, cancelled) or when this step is already running elsewhere (a
    redelivered task while its first delivery still runs). A step whose
    worker stopped beating is taken over and run again: steps are idempotent.
    What the step returns, if anything, is called once the step (and, for the
    last step, the job) is recorded as succeeded; its failure is only logged.
    """
    drop_broken_connections()
    job = Job.objects.get(pk=job_id)
    step = job.steps.get(name=name)
    if job.status == Job.Status.CANCELLED and cleanup is not None:
        cleanup(job)  # cancelled between two steps: remove what earlier steps made
    if job.is_finished:
        return False
    if step.status == JobStep.Status.SUCCEEDED:
        return True
    if not _claim(job, step, hostname):
        job.refresh_from_db()
        if job.status == Job.Status.CANCELLED and cleanup is not None:
            cleanup(job)
        return False
    job.refresh_from_db()
    try:
        with Heartbeat(job.pk):
            afterwards = function(job)
        if Job.objects.filter(pk=job.pk, status=Job.Status.CANCELLED).exists():
            raise JobCancelled()  # while a hook ran: it finished, the job goes no further
    except BaseException as exc:
        _record_failure(job, step, exc, cleanup)
        raise
    JobStep.objects.filter(pk=step.pk).update(
        status=JobStep.Status.SUCCEEDED, finished_at=timezone.now()
    )
    if final:
        Job.objects.filter(pk=job.pk).exclude(status__in=Job.FINISHED).update(
            status=Job.Status.SUCCEEDED, finished_at=timezone.now(), current_step=""
        )
    if afterwards is not None:
        try:
            afterwards()
        except Exception:  # the step and its job succeeded: a failure here is only logged
            logger.exception("pgclone job %s: work after step %s failed", job.pk, name)
    return True


def _claim(job: Job, step: JobStep, hostname: str | None) -> bool:
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
        )
        if claimed and not started:
            transaction.set_rollback(True)  # cancelled an instant ago
    return bool(claimed and started)


def _record_failure(job: Job, step: JobStep, exc: BaseException, cleanup: Cleanup | None) -> None:
    drop_broken_connections()
    message = describe_error(exc)
    if not isinstance(exc, PgCloneError | KeyboardInterrupt):
        logger.exception("pgclone job %s: step %s failed", job.pk, step.name)
    # Cleanup first: it needs nothing but the job as this step last read it.
    if cleanup is not None:
        try:
            with contextlib.suppress(DatabaseError):
                job.refresh_from_db()
            cleanup(job)
        except Exception as cleanup_exc:
            logger.exception("pgclone job %s: cleanup failed", job.pk)
            message += f"\n(cleanup also failed: {describe_error(cleanup_exc)})"
    status, reason = Job.objects.filter(pk=job.pk).values_list("status", "error").get()
    cancelled = status == Job.Status.CANCELLED or isinstance(exc, KeyboardInterrupt)
    if status == Job.Status.CANCELLED:
        message = reason or "Cancelled."
    JobStep.objects.filter(pk=step.pk).update(
        status=JobStep.Status.FAILED, finished_at=timezone.now(), message=message
    )
    end_job(job.pk, Job.Status.CANCELLED if cancelled else Job.Status.FAILED, message)


def cancel(job: Job, requested_by: str) -> bool:
    """Mark a job cancelled; its worker stops it within a heartbeat. False if too late.

    A job in its swap step can't be cancelled: stopping half-way would be the
    one way to leave things worse than either finishing or not starting.
    """
    cancelled = (
        Job.objects.filter(pk=job.pk, status__in=ACTIVE)
        .exclude(current_step="swap")
        .update(
            status=Job.Status.CANCELLED,
            error=f"Cancelled by {requested_by}.",
            finished_at=timezone.now(),
        )
    )
    if cancelled:
        JobStep.objects.filter(job=job, status=JobStep.Status.PENDING).update(
            status=JobStep.Status.SKIPPED
        )
    return bool(cancelled)


def jobs_alias() -> str:
    """The database alias that holds pgclone's job tables."""
    return router.db_for_write(Job)


def holds_jobs(conn: postgres.ConnInfo) -> bool:
    """Whether ``conn``'s database is the one holding pgclone's job tables."""
    try:
        return postgres.same_database(conn, postgres.conn_info(jobs_alias()))
    except DatabaseUnavailable:
        return False  # it does not exist (yet)


def using_database(job: Job, *, everything: bool, running_only: bool) -> list[Job]:
    """Other active jobs that use ``job``'s database: those of the same database,
    or every one when that database holds the job tables (they all write their
    progress there). ``running_only``: only those running a step right now."""
    others = Job.objects.filter(status__in=ACTIVE).exclude(pk=job.pk)
    if not everything:
        others = others.filter(database_name=job.database_name)
    if running_only:
        others = others.filter(steps__status=JobStep.Status.RUNNING)
    return list(others.order_by("created_at"))


def set_step_message(job: Job, name: str, message: str) -> None:
    JobStep.objects.filter(job=job, name=name).update(message=message)


def update_result(job: Job, **values: Any) -> None:
    """Merge values into ``job.result`` and save them at once (later steps read them)."""
    job.result = {**job.result, **values}
    Job.objects.filter(pk=job.pk).update(result=job.result)
