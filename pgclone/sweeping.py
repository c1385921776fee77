"""Cleaning up after workers that died: the stale-job sweep.

A running job records a heartbeat every few seconds. A job whose heartbeat
is older than PGCLONE_STALE_JOB_SECONDS has lost its worker (killed, out of
memory, its machine gone, or the message of its next step lost with a
restarted broker): the sweep marks it failed ("worker lost") and removes
what it left (a staged dump, a temporary database), which also frees the
restore lock of its database. Temporary databases that no active job owns
are dropped too.

The sweep runs before every new dump or restore, when a followed job goes
silent, from ``manage.py pgclone sweep``, and as the ``pgclone.sweep`` task
for celery beat.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db.models import CharField
from django.db.models.functions import Cast
from django.utils import timezone

from pgclone import conf, databases, jobs, postgres
from pgclone.models import Job, JobStep
from pgclone.steps import dump as dump_steps
from pgclone.steps import restore as restore_steps

logger = logging.getLogger("pgclone")
CLEANUPS = {Job.Kind.DUMP: dump_steps.cleanup, Job.Kind.RESTORE: restore_steps.cleanup}


def sweep() -> list[Job]:
    """Fail the jobs whose worker was lost, clean up after them; return them."""
    swept = [job for job in _stale_jobs() if _fail_lost(job)]
    _drop_orphan_databases()
    return swept


def _stale_jobs() -> list[Job]:
    cutoff = timezone.now() - dt.timedelta(seconds=conf.stale_job_seconds())
    return list(Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=cutoff))


def _fail_lost(job: Job) -> bool:
    worker = job.worker_hostname or "its worker"
    when = timezone.localtime(job.heartbeat_at).strftime("%Y-%m-%d %H:%M:%S")
    error = (
        f"Worker lost: nothing was heard from {worker} since {when}"
        + (f", during step {job.current_step}" if job.current_step else "")
        + ". Whatever the job had created was removed."
    )
    cutoff = timezone.now() - dt.timedelta(seconds=conf.stale_job_seconds())
    taken = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, heartbeat_at__lt=cutoff)
    if not taken.update(status=Job.Status.FAILED, error=error, finished_at=timezone.now()):
        return False  # it beat again, or someone else swept it
    JobStep.objects.filter(job=job, status=JobStep.Status.RUNNING).update(
        status=JobStep.Status.FAILED, finished_at=timezone.now(), message=error
    )
    JobStep.objects.filter(job=job, status=JobStep.Status.PENDING).update(
        status=JobStep.Status.SKIPPED
    )
    job.refresh_from_db()
    try:
        CLEANUPS[job.kind](job)
    except Exception as exc:
        logger.warning("pgclone: cleaning up after lost job %s failed: %s", job.pk, exc)
        Job.objects.filter(pk=job.pk).update(
            error=f"{error}\n(cleanup failed: {jobs.describe_error(exc)})"
        )
    return True


def _drop_orphan_databases() -> None:
    """Drop temporary databases whose job here is over, on every server.

    A temporary database whose job is not in this job table is left alone:
    another environment sharing the server may own it.
    """
    seen_servers = set()
    for alias, config in settings.DATABASES.items():
        if config.get("ENGINE") not in postgres.POSTGRES_ENGINES:
            continue
        conn = postgres.conn_info(alias)
        if (conn.host, conn.port) in seen_servers:
            continue
        seen_servers.add((conn.host, conn.port))
        try:
            with databases.maintenance(conn) as connection:
                for name in databases.leftover_databases(connection):
                    if _owner_is_over(name.split("_")[2]):
                        logger.info("pgclone: dropping %s, left by a job that is over", name)
                        databases.drop(connection, name)
        except Exception as exc:  # one unreachable server must not stop the sweep
            logger.warning("pgclone: could not look for leftovers via %r: %s", alias, exc)


def _owner_is_over(hex_prefix: str) -> bool:
    """Whether the job named by a leftover database (first 20 hex digits) has ended."""
    h = hex_prefix
    prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}"
    owners = Job.objects.annotate(id_text=Cast("id", CharField())).filter(
        id_text__startswith=prefix
    )
    return owners.exists() and not owners.filter(status__in=jobs.ACTIVE).exists()
