"""Celery tasks: thin wrappers around the steps, and the chain builders.

Every task takes the job id as its only argument; everything else is read
from the job row, so a step can run on any worker. Failures are recorded on
the job by the step runner and then re-raised to stop the chain; they are
listed in ``throws`` so the worker logs them without a traceback.
"""

from __future__ import annotations

from typing import Any

from celery import chain, shared_task
from celery.canvas import Signature

from pgclone import conf
from pgclone.exceptions import PgCloneError
from pgclone.steps import dump as dump_steps
from pgclone.steps import restore as restore_steps

_TASK_OPTIONS = {"bind": True, "throws": (PgCloneError,)}


@shared_task(name="pgclone.dump.pre_dump", **_TASK_OPTIONS)
def pre_dump(self: Any, job_id: str) -> None:
    dump_steps.run("pre_dump", job_id, hostname=self.request.hostname)


@shared_task(name="pgclone.dump.dump", **_TASK_OPTIONS)
def dump(self: Any, job_id: str) -> None:
    dump_steps.run("dump", job_id, hostname=self.request.hostname)


@shared_task(name="pgclone.dump.upload", **_TASK_OPTIONS)
def upload(self: Any, job_id: str) -> None:
    dump_steps.run("upload", job_id, hostname=self.request.hostname)


@shared_task(name="pgclone.restore.fetch", **_TASK_OPTIONS)
def fetch(self: Any, job_id: str) -> None:
    restore_steps.run("fetch", job_id, hostname=self.request.hostname)


@shared_task(name="pgclone.restore.restore_temp", **_TASK_OPTIONS)
def restore_temp(self: Any, job_id: str) -> None:
    restore_steps.run("restore_temp", job_id, hostname=self.request.hostname)


@shared_task(name="pgclone.restore.pre_swap", **_TASK_OPTIONS)
def pre_swap(self: Any, job_id: str) -> None:
    restore_steps.run("pre_swap", job_id, hostname=self.request.hostname)


@shared_task(name="pgclone.restore.swap", **_TASK_OPTIONS)
def swap(self: Any, job_id: str) -> None:
    restore_steps.run("swap", job_id, hostname=self.request.hostname)


def _chain(*tasks: Any, job_id: str) -> Signature:
    signatures = [task.si(job_id) for task in tasks]
    queue = conf.celery_queue()
    if queue:
        signatures = [signature.set(queue=queue) for signature in signatures]
    return chain(*signatures)


def dump_chain(job_id: str) -> Signature:
    return _chain(pre_dump, dump, upload, job_id=job_id)


def restore_chain(job_id: str) -> Signature:
    return _chain(fetch, restore_temp, pre_swap, swap, job_id=job_id)


@shared_task(name="pgclone.scheduled_dump")
def scheduled_dump(config: str | None = None, database: str = "default") -> str:
    """For celery beat: enqueue an ordinary dump job and return its id."""
    from pgclone import api

    return str(api.dump(config=config, database=database, requested_by="celery beat").pk)
