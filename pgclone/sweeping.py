"""Cleaning up after workers that died: the sweep.

In this order, so that each part works even when the one before found the
database holding the jobs closed:

1. Databases a swap left refusing connections are re-opened. This reads only
   the server catalogs (see ``pgclone.pg.swap``), never the job table.
2. A running job whose step lost its worker is failed ("worker lost") and
   what it made is removed: its step's process is known to be gone (it ran on
   this machine), or nothing was heard from it for PGCLONE_STALE_JOB_SECONDS.
   A restore lost after its renames committed is finished instead: the
   restore happened.
3. A job waiting for a worker to take its next step (between two steps, or
   not started) longer than PGCLONE_QUEUED_STEP_TIMEOUT is failed too: no
   worker consumes its queue, or its message was lost with the broker.
4. Temporary databases, unpacked dumps in this host's temporary folder and
   staged uploads that no active job owns are removed.

The sweep runs before every new dump or restore, when a followed job goes
silent, at every worker start, from ``manage.py pgclone sweep``, and as the
``pgclone.sweep`` task for celery beat.

The steps it calls on are imported where they are used: the admin and every
``manage.py`` command reach this module through ``pgclone.api`` at start-up,
and need the steps (0.1 s to import) only once a job starts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import tempfile
import time
from pathlib import Path

from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from pgclone import conf
from pgclone.engine import claims, jobs, runner
from pgclone.humanize import human_seconds
from pgclone.models import Job
from pgclone.pg import databases, kept_copies, ownership, postgres
from pgclone.pg import swap as swapping
from pgclone.storage import get_storage

logger = logging.getLogger("pgclone")


def sweep(now: dt.datetime | None = None, *, stored: bool = True) -> list[Job]:
    """Re-open what swaps left closed, end the jobs whose worker was lost or
    that waited too long, clean up after them; return the jobs ended.
    ``stored``: also drop kept copies whose dump is gone from the storage (which
    reads the storage: the sweep before each new job leaves that out)."""
    now = now or timezone.now()
    with contextlib.ExitStack() as stack:
        # One session per server for both looks at its catalog, opened when first
        # needed: the sweep runs before every new job, and a session is a fork.
        servers = [
            (stack.enter_context(databases.Maintenance(conn)), names) for conn, names in _servers()
        ]
        reopen_closed_databases(servers)
        ended = [job for job in _lost_jobs(now) if _end_lost(job, now)]
        if ended:
            reopen_closed_databases(servers)  # what their sessions, now ended, kept closed
        ended += [job for job in _waiting_too_long(now) if _end_waiting(job, now)]
        _drop_orphan_databases(servers)
    if stored:
        _drop_orphan_kept_copies()
    _remove_orphan_unpacked_dumps()
    from pgclone.steps import dump as dump_steps

    dump_steps.discard_leftover_uploads()
    return ended


def _servers() -> list[tuple[postgres.ConnInfo, set[str]]]:
    """Each PostgreSQL server of the project once, with its databases' names."""
    return [
        (conn, {postgres.conn_info(alias).name for alias in aliases})
        for conn, aliases in postgres.aliases_by_server()
    ]


def reopen_closed_databases(servers: list[tuple[databases.Maintenance, set[str]]]) -> list[str]:
    """Re-open the project's databases that a swap cut short left closed
    (``servers``: each server's session and the project's databases on it)."""
    reopened = []
    for maintenance, names in servers:
        conn = maintenance.conn
        try:
            opened = swapping.reopen_abandoned(conn, names, _known_job, maintenance.server)
        except Exception as exc:  # one unreachable server must not stop the sweep
            maintenance.close("postgres")  # the next look opens a new one
            logger.warning("pgclone: could not check %s:%s for closed databases: %s",
                           conn.host, conn.port, exc)  # fmt: skip
            continue
        for name in opened:
            logger.warning("pgclone: re-opened database %r, left refusing connections by a "
                           "swap whose worker was lost", name)  # fmt: skip
        reopened += opened
    return reopened


def _known_job(job: str) -> bool | None:
    """Whether the job table holds job ``job`` (an id or its beginning); None when
    it can't be read: the database holding it may be one a swap left closed."""
    try:
        return Job.objects.with_id_prefix(databases.id_prefix(job)).exists()
    except DatabaseError:
        return None


# Running jobs whose worker was lost -------------------------------------------------------


def _lost_jobs(now: dt.datetime) -> list[Job]:
    """Running jobs with a step running whose process is gone or silent."""
    cutoff = now - dt.timedelta(seconds=conf.stale_job_seconds())
    return [
        job
        for job in Job.objects.running_a_step()
        if (job.heartbeat_at and job.heartbeat_at < cutoff)
        or (job.worker_process and claims.is_gone(job.worker_process))
    ]


def _end_lost(job: Job, now: dt.datetime) -> bool:
    cutoff = now - dt.timedelta(seconds=conf.stale_job_seconds())
    worker = job.worker_hostname or "its worker"
    if job.worker_process and claims.is_gone(job.worker_process):
        _end_orphaned_sessions(job)
        pid = job.worker_process.split(claims.SEPARATOR)[2]
        what = f"Worker lost: the process that ran it ({worker}, pid {pid}) is gone"
        still = Q(worker_process=job.worker_process)
    else:
        when = timezone.localtime(job.heartbeat_at).strftime("%Y-%m-%d %H:%M:%S")
        what = f"Worker lost: nothing was heard from {worker} since {when}"
        still = Q(heartbeat_at__lt=cutoff)
    what += f", during step {job.current_step}" if job.current_step else ""
    from pgclone.steps.workflows import workflow_for  # loaded only once there is a job

    finish_lost = workflow_for(job.kind).finish_lost
    if finish_lost is not None:
        finished, note = finish_lost(job, still)
        if finished:
            return True
        what += note
    if not jobs.mark_lost(job, what + ".", still):
        return False  # it beat again, or someone else swept it
    _clean_up(job, what)
    return True


def _end_orphaned_sessions(job: Job) -> None:
    """End the database sessions of a job whose process is known to be gone.

    A session waiting for a lock, or running a long statement, notices that its
    client died only when it next reads from it: left alone, it would go on
    (and create the temporary database after the cleanup, say), and a swap's
    would keep the live database closed.
    """
    # Through the server's postgres database: the job's may be closed (a swap's window).
    conn = postgres.conn_info(job.database_alias).for_job(job.pk).with_name("postgres")
    try:
        postgres.end_sessions(conn)
        with databases.maintenance(conn) as connection:
            deadline = time.monotonic() + swapping.TERMINATE_TIMEOUT_MS / 1000
            while swapping.job_sessions(connection, job.pk) and time.monotonic() < deadline:
                time.sleep(0.01)
    except Exception as exc:  # the sweep goes on; the cleanup says what it could not do
        logger.warning("pgclone: could not end the sessions of job %s: %s", job.pk, exc)


def _clean_up(job: Job, what: str) -> None:
    from pgclone.steps.workflows import workflow_for

    job.refresh_from_db()
    try:
        removed = workflow_for(job.kind).cleanup(job)
    except Exception as exc:
        logger.warning("pgclone: cleaning up after job %s failed: %s", job.pk, exc)
        error = f"{what}.\n(cleanup failed: {runner.describe_error(exc)})"
    else:
        error = f"{what}. " + (
            ("Removed " + ", ".join(removed) + ".") if removed else "It had left nothing behind."
        )
    jobs.record_cleanup(job, what + ".", error)


# Jobs waiting for a worker -----------------------------------------------------------------


def _waiting_too_long(now: dt.datetime) -> list[Job]:
    """Jobs whose next step no worker has taken for PGCLONE_QUEUED_STEP_TIMEOUT."""
    return Job.objects.waiting_since(now - dt.timedelta(seconds=conf.queued_step_timeout()))


def _end_waiting(job: Job, now: dt.datetime) -> bool:
    step = job.steps.filter(status="pending").first()
    queue = conf.celery_queue() or "Celery's default queue"
    waited = human_seconds(conf.queued_step_timeout())
    what = (
        f"No worker took its {'next ' if job.status == Job.Status.RUNNING else ''}step "
        f"({step.name if step else '?'}) within PGCLONE_QUEUED_STEP_TIMEOUT ({waited}): is a "
        f"worker consuming {queue}? (Or the message was lost with the broker.)"
    )
    if not jobs.expire_waiting(job, what):
        return False
    _clean_up(job, what.rstrip("."))
    return True


# What no active job owns ----------------------------------------------------------------------


def _drop_orphan_databases(servers: list[tuple[databases.Maintenance, set[str]]]) -> None:
    """Drop temporary databases whose job here is over, on every server.

    A temporary database whose job is not in this job table is left alone:
    another environment sharing the server may own it; so is one that is not
    pgclone's (``pgclone.pg.ownership``): any role may create one of that name.
    """
    from pgclone.steps import kept as kept_steps

    for maintenance, lives in servers:
        try:
            connection = maintenance.server
            names = databases.leftover_databases(connection)
            found = ownership.look(connection, names, sorted(lives))
            for name, database in found.items():
                if ownership.sweepable(database, lives, _known_job) and _owner_is_over(
                    name.split("_")[2]
                ):
                    if kept_steps.confirm_left(name):
                        logger.info("pgclone: %s, left by a job that succeeded, dealt with", name)
                        continue
                    with kept_copies.pending_lock(connection, name) as held:
                        if held:  # else a worker is making it a kept copy
                            logger.info("pgclone: dropping %s, left by a job that is over", name)
                            databases.drop(connection, name)
        except Exception as exc:  # one unreachable server must not stop the sweep
            maintenance.close("postgres")
            logger.warning(
                "pgclone: could not look for leftovers on %s: %s", maintenance.conn.host, exc
            )


def _drop_orphan_kept_copies() -> None:
    """Kept copies whose dump is gone from the storage (removed by other means)."""
    from pgclone.steps import kept as kept_steps

    try:
        dropped = kept_steps.drop_orphans(get_storage())
    except Exception as exc:  # the storage unreachable: nothing is dropped
        logger.warning("pgclone: could not look for kept copies of removed dumps: %s", exc)
        return
    for name in dropped:
        logger.info("pgclone: dropped %s, the kept copy of a dump no longer stored", name)


def _remove_orphan_unpacked_dumps() -> None:
    """Unpacked dumps in this host's temporary folder whose job here is over."""
    from pgclone.steps import restore as restore_steps

    folder = Path(conf.temp_dir() or tempfile.gettempdir())
    for path in folder.glob(restore_steps.unpack_prefix("")[:-1] + "*"):
        digits = path.name.split("-")[2] if path.name.count("-") >= 3 else ""
        if path.is_dir() and len(digits) == 20 and _owner_is_over(digits):
            logger.info("pgclone: removing %s, left by a job that is over", path)
            shutil.rmtree(path, ignore_errors=True)


def _owner_is_over(hex_prefix: str) -> bool:
    """Whether the job named by a leftover (first 20 hex digits of its id) has ended."""
    owners = Job.objects.with_id_prefix(databases.id_prefix(hex_prefix))
    return owners.exists() and not owners.active().exists()
