"""The runner every step goes through, whichever job and worker.

A step is a plain function taking a :class:`Job`. ``run_step`` wraps it: it
skips steps of jobs that already ended and steps that already succeeded (a
redelivered task must not redo work), claims the step atomically, keeps a
heartbeat while the step runs, records how it ended and its real cause of
failure, and runs the job's cleanup when anything fails. It writes nothing
itself: every change of a job's state is a transition in ``pgclone.engine.jobs``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections

from pgclone import conf
from pgclone.engine import jobs, threads
from pgclone.exceptions import JobCancelled, PgCloneError
from pgclone.models import Job, JobStep
from pgclone.pg import programs

logger = logging.getLogger("pgclone")

# A step may return work to do once it is recorded as succeeded (and the job,
# after its last step): slow cleanup nobody needs to wait for.
StepFunction = Callable[[Job], Callable[[], Any] | None]
# Undoes what a job's steps made; says what it removed.
Cleanup = Callable[[Job], list[str]]


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
    if not jobs.claim_step(job, step, hostname):
        job.refresh_from_db()
        if job.status == Job.Status.CANCELLED and cleanup is not None:
            cleanup(job)
        return False
    job.refresh_from_db()
    try:
        with Heartbeat(job.pk):
            afterwards = function(job)
        if jobs.is_cancelled(job.pk):
            raise JobCancelled()  # while a hook ran: it finished, the job goes no further
    except BaseException as exc:
        _record_failure(job, step, exc, cleanup)
        raise
    jobs.succeed_step(job.pk, name)
    if final:
        jobs.succeed_job(job.pk)
    if afterwards is not None:
        try:
            afterwards()
        except Exception:  # the step and its job succeeded: a failure here is only logged
            logger.exception("pgclone job %s: work after step %s failed", job.pk, name)
    return True


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
    jobs.fail_step(job.pk, step.name, message, interrupted=isinstance(exc, KeyboardInterrupt))


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

    def __init__(
        self, job_id: Any, total: int | None = None, interval: float = 0.5, label: str = ""
    ) -> None:
        self.job_id = job_id
        self.total = total
        self.done = 0
        self.interval = interval
        self._last = 0.0
        jobs.start_progress(job_id, total, label)

    def add(self, amount: int) -> None:
        self.done += amount
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.flush()

    def flush(self) -> None:
        """Save progress; raise JobCancelled once the job stopped running (cancelled)."""
        if not jobs.record_progress(self.job_id, self.done, self.total):
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
        self.children = programs.current_children()
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
                if not jobs.beat(self.job_id):
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
