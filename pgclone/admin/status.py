"""What a job's page says while it runs and once it ended, as JSON for its live updates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from pgclone import conf, humanize, payloads
from pgclone.models import Job, JobStep

NO_WORKER_HINT_SECONDS = 10.0  # as ``--wait``: then the page asks whether a worker runs
FOLLOW_CANCELLED_SECONDS = 3600.0  # how long a cancelled job's running step is followed
HOOK_STEPS = ("pre_dump", "pre_swap")  # steps that run hooks, which can't be stopped half-way


def _progress(job: Job) -> str:
    if not job.progress_done:
        return ""
    text = humanize.human_bytes(job.progress_done)
    if job.progress_label:
        text = f"{job.progress_label} {text}"
    if job.progress_total:
        text += f", {min(99, int(100 * job.progress_done / job.progress_total))}%"
    return text


def _still_running(job: Job, steps: list[JobStep], now: dt.datetime) -> JobStep | None:
    """A step that still runs although the job ended (cancelled during a hook)."""
    running = [step for step in steps if step.status == JobStep.Status.RUNNING]
    if not running or not job.is_finished:
        return None
    # A worker lost meanwhile never ends the step: the page stops following at some point.
    if job.finished_at and (now - job.finished_at).total_seconds() > FOLLOW_CANCELLED_SECONDS:
        return None
    return running[0]


def note(job: Job, steps: list[JobStep], now: dt.datetime) -> str:
    """A line under the status: why a job waits, or why a cancelled one still runs."""
    if job.status == Job.Status.PENDING and not any(s.status != "pending" for s in steps):
        queue = conf.celery_queue() or "Celery's default queue"
        waited = (now - job.created_at).total_seconds()
        if waited < NO_WORKER_HINT_SECONDS:
            return f"Queued on {queue}: waiting for a worker to take it."
        return (
            f"Queued on {queue} {humanize.human_seconds(waited)} ago and no worker has taken "
            f"it yet. Is a Celery worker running and consuming from {queue}?"
        )
    still = _still_running(job, steps, now)
    if still is not None and still.name in HOOK_STEPS:
        return (
            f"Cancel requested: the {still.name} step runs a hook, which can't be stopped "
            "half-way. It finishes first; then the job goes no further."
        )
    if still is not None:
        return f"Cancel requested: the {still.name} step stops within seconds."
    return ""


def live_database(job: Job) -> str:
    """Whether a restore that ended without success changed the live database."""
    if job.kind != Job.Kind.RESTORE or job.status == Job.Status.SUCCEEDED:
        return ""
    if not job.is_finished:
        return ""
    name = job.database_name or job.database_alias
    if job.result.get("swapped"):
        return f"The live database {name} was replaced (the swap happened before the failure)."
    return f"The live database {name} was not changed: the restore stopped before its swap."


def _step_message(step: JobStep, error: str) -> str:
    """A failed step's message, unless it is the job's error (shown once, below)."""
    if step.status == JobStep.Status.FAILED and error and step.message.strip() in error:
        return "failed: the error is below"
    return step.message


def job_status(job: Job) -> dict[str, Any]:
    """What the job page shows, as JSON for its live updates."""
    now = timezone.now()
    steps = list(job.steps.all())
    return {
        "id": str(job.pk),
        "status": job.status,
        "heading": str(job),
        # The page follows a cancelled job until its last step has really ended.
        "finished": job.is_finished and _still_running(job, steps, now) is None,
        "current_step": job.current_step,
        "progress": _progress(job),
        "duration": humanize.human_seconds(job.duration),
        "error": job.error,
        "live": live_database(job),
        "note": note(job, steps, now),
        "steps": [
            {
                "name": step.name,
                "status": step.status,
                "duration": humanize.human_seconds(step.duration),
                "worker": step.worker_hostname,
                "message": _step_message(step, job.error),
            }
            for step in steps
        ],
    }


def reversible(job: Job) -> bool:
    return job.kind == Job.Kind.RESTORE and payloads.restore_options(job).reversible
