"""Celery tasks: one per step of each workflow (``pgclone.steps``), and beat's.

The step tasks are made from the workflow declarations; chains are sent by
task name (``Workflow.chain``), so whoever enqueues needs no task objects.
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
from typing import Any

from celery import shared_task
from celery.exceptions import Ignore
from celery.signals import worker_ready
from django.db import connections, router

from pgclone import api, sweeping
from pgclone.engine import notify
from pgclone.engine.workflow import Workflow
from pgclone.exceptions import PgCloneError
from pgclone.models import Job
from pgclone.steps.workflows import WORKFLOWS

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


def _step_task(workflow: Workflow, name: str) -> Any:
    @shared_task(name=workflow.task_name(name), bind=True, acks_late=True, throws=(PgCloneError,))
    def task(self: Any, job_id: str) -> None:
        try:
            going_on = workflow.run(name, job_id, hostname=self.request.hostname)
        except Job.DoesNotExist:
            _not_here(name, job_id)
            raise Ignore() from None
        if not going_on:
            raise Ignore()  # the job ended, or this step runs elsewhere: stop this chain

    task.__doc__ = workflow.step(name).function.__doc__
    return task


STEP_TASKS = {
    workflow.task_name(name): _step_task(workflow, name)
    for workflow in WORKFLOWS.values()
    for name in workflow.step_names
}


@shared_task(name="pgclone.scheduled_dump")
def scheduled_dump(config: str | None = None, database: str = "default") -> str:
    """For celery beat: enqueue an ordinary dump job and return its id."""
    return str(api.dump(config=config, database=database, requested_by="celery beat").pk)


@shared_task(name="pgclone.verify_latest")
def verify_latest(names: list[str] | None = None, database: str = "default") -> list[str]:
    """For celery beat: a trial restore of the newest dump of each database (of
    ``names`` when given), into scratch databases on ``database``'s server;
    returns the job ids."""
    started = api.verify_latest(names, database=database, requested_by="celery beat")
    return [str(job.pk) for job in started]


@shared_task(name="pgclone.sweep")
def sweep() -> int:
    """For celery beat: fail jobs whose worker was lost and remove what they left."""
    return len(sweeping.sweep())


@shared_task(name=notify.TASK_NAME, ignore_result=True)
def notify_failure(channel: str, body: dict[str, Any]) -> None:
    """Tell about a failed job (``channel``: "email" or "webhook"), off the process
    that ended it; its own deadline bounds it (``pgclone.engine.notify``)."""
    notify.deliver(channel, body)


@worker_ready.connect
def sweep_at_worker_start(**kwargs: Any) -> None:
    """A worker that starts cleans up after its predecessor at once: steps whose
    process is gone, databases a swap left closed, unpacked dumps on this host."""
    try:
        for job in sweeping.sweep():
            logger.warning("pgclone: %s job %s ended at worker start: %s", job.kind, job.pk,
                           job.error)  # fmt: skip
    except Exception as exc:  # the worker must start all the same
        logger.warning("pgclone: the sweep at worker start failed: %s", exc)
    finally:
        # Else the worker's main process keeps this session for as long as it runs,
        # idle (no task runs there under prefork): it holds a server process and
        # blocks CREATE DATABASE … TEMPLATE of the job tables' database.
        connections.close_all()
