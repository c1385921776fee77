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

from types import ModuleType
from typing import Any

from celery import chain, shared_task
from celery.canvas import Signature
from celery.exceptions import Ignore

from pgclone import conf
from pgclone.exceptions import PgCloneError
from pgclone.steps import dump as dump_steps
from pgclone.steps import restore as restore_steps


def _step_task(steps: ModuleType, kind: str, name: str) -> Any:
    @shared_task(name=f"pgclone.{kind}.{name}", bind=True, acks_late=True, throws=(PgCloneError,))
    def task(self: Any, job_id: str) -> None:
        if not steps.run(name, job_id, hostname=self.request.hostname):
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
