"""The restore's last step: the swap, and what follows it.

``swap`` waits for jobs that use the live database, checks that the new
database can hold the job history, prepares ``:current`` for a reversible
restore, then hands over to ``pgclone.pg.swap`` for the moment the live database
is replaced. After it: the replaced database is kept as ``:previous`` or
dropped, and a restore whose worker was lost after the renames is finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.models import Q

from pgclone import conf, payloads
from pgclone.engine import jobs, runner
from pgclone.exceptions import PgCloneError
from pgclone.models import Job
from pgclone.pg import databases, driver, job_tables, ownership, postgres, search_path
from pgclone.pg import swap as swapping


def live_conn(job: Job) -> postgres.ConnInfo:
    return postgres.conn_info(job.database_alias).for_job(job.pk)


def swap(job: Job) -> Callable[[], None]:
    """Put the temporary database in place of the live one."""
    live = live_conn(job)
    temp = job.result["temp_database"]
    old = databases.old_name(job.pk)
    with databases.Maintenance(live) as pg:
        if swapped_already(pg.server, job):
            # Run again after its worker was lost just after the renames: the swap
            # happened; finish what follows it.
            return finish_swapped(job, "the swap had already happened")
        holds_jobs = job_tables.holds_jobs_on(pg.server, live.name)
        # Where the project's sessions find the job tables (pgclone's search none).
        path = search_path.project_path(live, pg.on(live.name)) if holds_jobs else []
        if holds_jobs:
            _check_job_tables(pg.on(live.name), pg.on(temp), path)
        _wait_for_other_jobs(job, holds_jobs)
        _refuse_foreign(pg.server, job, temp, old)
        if payloads.restore_options(job).reversible:
            refuse_foreign_copies(pg.server, job)
            # :current is prepared under a temporary name: the one in place now
            # stays until the swap has happened.
            staging = current_staging(job)
            drop_own(pg.server, staging, job)
            pg.close(temp)  # a database is copied only while nobody is connected to it
            databases.create_copy(pg.server, staging, temp)
            ownership.set_mark(pg.server, staging, job.pk, live.name)
        history = (
            (lambda: job_tables.JobHistoryCopy(pg, live.name, temp, path)) if holds_jobs else None
        )
        result = swapping.swap(
            live, live=live.name, new=temp, old_name=old, job_id=job.pk, history=history
        )
        # This process's own connections to the live database were ended by the swap.
        connections.close_all()
        window_ms = round(result.window_ms)  # said once, the same everywhere
        jobs.update_result(job, swapped=True, swap_window_ms=window_ms)
        notes = [f"warning: {warning}" for warning in result.warnings]
        kept, retired = _after_swap(job, pg.server, result.old_name)
    message = f"Swapped {temp} into {live.name!r}; new connections waited {window_ms} ms"
    jobs.set_step_message(job, "swap", "; ".join([message, *notes, *kept]))
    return _dropper(job, live, retired)


def _refuse_foreign(server: driver.Connection, job: Job, temp: str, old: str) -> None:
    """Swap in only this job's own temporary database, and never under a name
    another role holds."""
    for name in (temp, old):
        problem = ownership.check(server, name, live_conn(job).name, job.pk)
        if problem:
            raise PgCloneError(f"Can't swap: {problem}. The live database is unchanged.")


def refuse_foreign_copies(connection: driver.Connection, job: Job) -> None:
    """A reversible restore must be able to replace ``:previous`` and ``:current``:
    checked before anything is swapped, so that it never reports an undo it can't offer."""
    for which in databases.COPY_SUFFIXES:
        name = databases.copy_name(job.database_name, which)
        problem = ownership.check(connection, name, live_conn(job).name)
        if problem:
            raise PgCloneError(
                f"A reversible restore can't keep :{which}: {problem}. Nothing was swapped; "
                f"the live database is unchanged. Have its owner (or a superuser) drop "
                f"{name!r}, or restore without --reversible."
            )


def drop_own(connection: driver.Connection, name: str, job: Job) -> bool:
    """Drop this job's database ``name``; True if dropped, False if absent.
    Raises when a database of that name is not the job's."""
    problem = ownership.check(connection, name, live_conn(job).name, job.pk)
    if problem:
        raise PgCloneError(f"Can't use the name {name!r}: {problem}. Have its owner drop it.")
    if not databases.exists(connection, name):
        return False
    databases.drop(connection, name)
    return True


def swapped_already(connection: driver.Connection, job: Job) -> bool:
    """Whether this job's renames committed (its temporary database is gone
    and the database it replaced is there under its old name, or recorded)."""
    temp = job.result.get("temp_database")
    return (
        bool(temp)
        and not databases.exists(connection, temp)
        and (job.result.get("swapped") or databases.exists(connection, databases.old_name(job.pk)))
    )


def finish_swapped(job: Job, how: str) -> Callable[[], None]:
    """Finish a restore whose renames committed but whose worker was lost before
    it recorded anything: what follows the swap, then the step's message."""
    live, old = live_conn(job), databases.old_name(job.pk)
    with databases.maintenance(live) as connection:
        if databases.exists(connection, old) and not ownership.check(
            connection, old, live.name, job.pk
        ):
            swapping.allow_connections(connection, old, allowed=True)
        jobs.update_result(job, swapped=True)
        kept, retired = _after_swap(job, connection, old)
    jobs.set_step_message(job, "swap", "; ".join([how, *kept]))
    return _dropper(job, live, retired)


def _wait_for_other_jobs(job: Job, holds_jobs: bool) -> None:
    """The swap ends every session on the live database: wait (up to
    PGCLONE_SWAP_WAIT_SECONDS) until no other job is running a step on it,
    or on the job tables it holds."""
    deadline = time.monotonic() + conf.swap_wait_seconds()
    while others := jobs.using_database(job, everything=holds_jobs, running_only=True):
        if time.monotonic() > deadline:
            raise PgCloneError(
                f"Job {others[0].pk} ({others[0].kind}, step {others[0].current_step}) still "
                f"uses {job.database_name!r} after {conf.swap_wait_seconds():g}s; the swap "
                "would end its sessions, so nothing was swapped. Restore again once it is over."
            )
        jobs.set_step_message(
            job, "swap", f"Waiting for job {others[0].pk} ({others[0].kind}) to finish first."
        )
        time.sleep(1)


def current_staging(job: Job) -> str:
    return databases.temp_name(job.pk) + "_current"


def _after_swap(
    job: Job, server: driver.Connection, old: str | None
) -> tuple[list[str], list[str]]:
    """Put :previous / :current in place (reversible) and set aside what is no
    longer wanted under ``pgclone_old_…`` names; returns notes for the step and
    the names set aside, which are dropped once the job has succeeded (the
    sweep drops them if that never happens). Never fails the job: the restore
    already happened."""
    previous = databases.copy_name(job.database_name, "previous")
    current = databases.copy_name(job.database_name, "current")
    live = live_conn(job).name
    retired: list[str] = []
    notes: list[str] = []
    try:
        for which, name in (("previous", previous), ("current", current)):
            why = ownership.reason(server, name, live)
            if why:  # another role's: not pgclone's to rename or drop
                notes.append(f"left {name!r} alone ({why})")
                continue
            to = f"{databases.old_name(job.pk)}_{which}"
            set_aside = swapping.retire(server, name, to, job_id=job.pk, live=live)
            if set_aside:
                retired.append(set_aside)
        if not payloads.restore_options(job).reversible:
            return notes, [name for name in (old, *retired) if name]
        if old:
            databases.rename(server, old, previous)
        databases.rename(server, current_staging(job), current)
        return [f"kept :previous ({previous}) and :current ({current})", *notes], retired
    except Exception as exc:
        warning = f"warning: cleaning up after the swap failed: {runner.describe_error(exc)}"
        return [warning, *notes], [name for name in (old, *retired) if name]


def _dropper(job: Job, live: postgres.ConnInfo, names: list[str]) -> Callable[[], None]:
    """Dropping a large database takes seconds: done after the job is reported
    succeeded, so nobody waits for it."""

    def drop() -> None:
        failed = []
        with databases.maintenance(live) as connection:
            for name in names:
                try:
                    databases.drop(connection, name)
                except Exception as exc:
                    failed.append(f"{name} ({runner.describe_error(exc).strip()})")
        if failed:
            step = job.steps.get(name="swap")
            jobs.set_step_message(
                job,
                "swap",
                f"{step.message}; warning: could not drop {', '.join(failed)}: "
                "`manage.py pgclone sweep` drops it",
            )

    return drop


def _check_job_tables(current: Any, new: Any, path: list[str]) -> None:
    """The restored database must be able to hold this environment's job history."""
    missing = job_tables.missing_job_columns(current, new, path)
    if missing:
        raise PgCloneError(
            f"The restored database lacks pgclone's job tables or columns ({missing}); "
            "job history could not follow the swap. Add 'migrate' to the pre-swap hooks."
        )


def finish_lost(job: Job, still: Q) -> tuple[bool, str]:
    """For the sweep, before it fails a restore whose worker was lost: one lost
    after its renames committed happened and is finished here (True); of one
    lost in the swap before them, say that the live database is as it was."""
    if job.current_step != "swap":
        return False, ""
    with databases.maintenance(live_conn(job)) as connection:
        swapped = swapped_already(connection, job)
    if not swapped:
        return False, (
            f". The swap did not happen: {job.database_name!r} holds its old data "
            "and accepts connections"
        )
    if not jobs.take_over(job, still):
        return False, ""  # it beat again, or another sweep is at it
    job.refresh_from_db()
    drop = finish_swapped(
        job, "its worker was lost just after the swap; the sweep finished the restore"
    )
    jobs.succeed_step(job.pk, "swap")
    jobs.succeed_job(job.pk)
    drop()
    return True, ""
