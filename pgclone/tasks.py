"""Celery tasks: thin wrappers around the steps, and the chain builders.

Every step task takes the job id as its only argument; everything else is
read from the job row, so a step can run on any worker. Failures are
recorded on the job by the step runner and re-raised to stop the chain;
they are listed in ``throws`` so the worker logs them without a traceback.

Tasks are acknowledged late: a worker that dies mid-step leaves the message
to be delivered again, and the step runner decides what a second delivery
does (nothing while the first still beats; take over once it stopped).
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from celery import chain, shared_task
from celery.canvas import Signature
from celery.exceptions import Ignore
from celery.signals import worker_ready
from django.db import connections, router

from pgclone import conf
from pgclone.exceptions import PgCloneError
from pgclone.models import Job
from pgclone.steps import dump as dump_steps
from pgclone.steps import restore as restore_steps

logger = logging.getLogger("pgclone")


def _not_here(name: str, job_id: str) -> None:
    """One line, no traceback: the job was enqueued against other DATABASES."""
    alias = router.db_for_read(Job)
    where = connections[alias].settings_dict  # never its PASSWORD
    logger.error(
        "pgclone: %s step of job %s ignored: the job is not in this worker's job database "
        "(alias %r: NAME %r, HOST %r, PORT %r). The worker and the command that enqueued "
        "the job must use the same DATABASES.",
        name, job_id, alias, where.get("NAME"), where.get("HOST"), where.get("PORT"),
    )  # fmt: skip


def _step_task(steps: ModuleType, kind: str, name: str) -> Any:
    @shared_task(name=f"pgclone.{kind}.{name}", bind=True, acks_late=True, throws=(PgCloneError,))
    def task(self: Any, job_id: str) -> None:
        try:
            going_on = steps.run(name, job_id, hostname=self.request.hostname)
        except Job.DoesNotExist:
            _not_here(name, job_id)
            raise Ignore() from None
        if not going_on:
            raise Ignore()  # the job ended, or this step runs elsewhere: stop this chain

    task.__doc__ = steps.STEPS[name].__doc__
    return task


pre_dump = _step_task(dump_steps, "dump", "pre_dump")
dump = _step_task(dump_steps, "dump", "dump")
upload = _step_task(dump_steps, "dump", "upload")
fetch = _step_task(restore_steps, "restore", "fetch")
restore_temp = _step_task(restore_steps, "restore", "restore_temp")
pre_swap = _step_task(restore_steps, "restore", "pre_swap")
swap = _step_task(restore_steps, "restore", "swap")


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


@shared_task(name="pgclone.sweep")
def sweep() -> int:
    """For celery beat: fail jobs whose worker was lost and remove what they left."""
    from pgclone import sweeping

    return len(sweeping.sweep())


@worker_ready.connect
def sweep_at_worker_start(**kwargs: Any) -> None:
    """A worker that starts cleans up after its predecessor at once: steps whose
    process is gone, databases a swap left closed, unpacked dumps on this host."""
    from pgclone import sweeping

    try:
        for job in sweeping.sweep():
            logger.warning("pgclone: %s job %s ended at worker start: %s", job.kind, job.pk,
                           job.error)  # fmt: skip
    except Exception as exc:  # the worker must start all the same
        logger.warning("pgclone: the sweep at worker start failed: %s", exc)
