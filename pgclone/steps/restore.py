"""The restore chain: fetch → restore_temp → pre_swap → swap.

Nothing touches the live database before ``swap``. Every earlier failure
(and a failure of the swap itself) drops the temporary database and leaves
the live one as it was.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

from pgclone import (
    conf,
    databases,
    hooks,
    jobs,
    keys,
    postgres,
    privileges,
    routing,
    signing,
    streams,
)
from pgclone import swap as swapping
from pgclone.exceptions import DumpNotFound, InvalidInput, PgCloneError, RestoreRefused
from pgclone.humanize import human_bytes
from pgclone.models import Job
from pgclone.storage import storage_for
from pgclone.storage.local import LocalStorage

STEP_NAMES = ("fetch", "restore_temp", "pre_swap", "swap")


def ensure_allowed(job: Job) -> None:
    """Checked again in the worker, before each step: its settings are the ones
    that count, and each step may run code that came with the dump."""
    if not conf.allow_restore():
        raise RestoreRefused()
    privileges.refuse_privileged(live_conn(job))


def live_conn(job: Job) -> postgres.ConnInfo:
    return postgres.conn_info(job.database_alias).for_job(job.pk)


def fetch(job: Job) -> None:
    """Check the source before any database is created."""
    ensure_allowed(job)
    source = job.options["source"]
    if source["type"] == "database":
        _refuse_unlisted_source(source)
        live = live_conn(job)
        with databases.maintenance(live) as connection:
            if not databases.exists(connection, source["name"]):
                raise DumpNotFound(missing_database_message(source, live.name))
        jobs.set_step_message(job, "fetch", f"Database {source['name']!r} found.")
        return
    storage = storage_for(job.options["storage_location"])
    key = keys.parse_key(source["key"])
    manifest = storage.complete_manifest(key)
    signing.check(key, manifest)  # before anything is read or created
    if manifest.get("compression") != streams.COMPRESSION:
        raise PgCloneError(f"Dump {key} uses {manifest.get('compression')!r}, not zstd.")
    checked = "complete"
    if _unpacks(storage):
        checked = "complete (its checksum is checked as it is unpacked)"
    elif isinstance(storage, LocalStorage):
        # Reading a local file twice is cheap: check it before creating anything.
        # A dump from S3 is checked as it streams, before the swap.
        with storage.open(key) as source:
            streams.verify(source, manifest["sha256"])
        checked = "its checksum verified"
    jobs.update_result(job, manifest=manifest)
    size = human_bytes(manifest["size"])
    jobs.set_step_message(job, "fetch", f"{key} ({size}) found, {checked}.")


def _refuse_unlisted_source(source: dict[str, Any]) -> None:
    """Checked again in the worker: a database named with ``:NAME`` must be one of
    PGCLONE_LOCAL_SOURCES (``:previous`` and ``:current`` always may)."""
    allowed = conf.local_sources()
    if allowed is None or source["label"] in (":previous", ":current"):
        return
    if source["name"] not in allowed:
        raise InvalidInput(
            f"{source['label']!r} is not a database restores may copy here: "
            f"PGCLONE_LOCAL_SOURCES allows {_names(allowed)}."
        )


def _names(allowed: list[str]) -> str:
    return ", ".join(f":{name}" for name in allowed) or "none"


def missing_database_message(source: dict[str, Any], live: str) -> str:
    label = source["label"]
    if label in (":previous", ":current"):
        return (
            f"No {label} copy of {live!r} exists: only a restore made with --reversible "
            "keeps one (and a later restore without it removes them)."
        )
    return (
        f"No database {source['name']!r} on the server: `manage.py pgclone ls --local` lists them."
    )


def restore_temp(job: Job) -> None:
    """Create the temporary database and fill it."""
    ensure_allowed(job)
    live = live_conn(job)
    temp = databases.temp_name(job.pk)
    jobs.update_result(job, temp_database=temp)
    source = job.options["source"]
    with databases.maintenance(live) as connection:
        databases.drop(connection, temp)  # left by an earlier attempt of this step
    if source["type"] == "database":
        with databases.maintenance(live) as connection:
            databases.create_copy(connection, temp, source["name"])
        databases.clear_job_tables(live, temp)
        message = f"Copied {source['name']!r} into {temp}."
    else:
        storage = storage_for(job.options["storage_location"])
        key = keys.parse_key(source["key"])
        manifest = job.result["manifest"]
        target = live.with_name(temp)
        if _unpacks(storage):
            message = _restore_parallel(job, storage, key, manifest, target)
        else:
            message = _restore_streamed(job, storage, key, manifest, target)
    # The pre-swap hooks must see the database as it will be once in place:
    # with the live database's search_path and other settings.
    with databases.maintenance(live) as connection:
        carried = databases.carry_over(connection, live.name, temp)
    if carried:
        message += " Kept the live database's " + ", ".join(carried) + "."
    jobs.set_step_message(job, "restore_temp", message)


def _unpacks(storage: Any) -> bool:
    """A local dump is unpacked to a file for a parallel pg_restore (which
    needs a file it can seek in); a dump in S3 is streamed."""
    return isinstance(storage, LocalStorage) and conf.restore_jobs() > 1


def _create_temp(live: postgres.ConnInfo, temp: str) -> None:
    with databases.maintenance(live) as connection:
        databases.create_empty(connection, temp, like=live.name)


def _restore_streamed(
    job: Job, storage: Any, key: keys.DumpKey, manifest: dict, target: Any
) -> str:
    _create_temp(live_conn(job), target.name)
    progress = jobs.Progress(job.pk, total=manifest["size"])
    argv = postgres.pg_restore_argv(target)
    with (
        storage.open(key) as source,
        postgres.spawn(
            argv, env=target.env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        ) as proc,
    ):
        streams.decompress_into(
            source,
            proc,
            expected_sha256=manifest["sha256"],
            expected_raw_size=manifest.get("raw_size"),
            on_progress=progress.add,
        )
    progress.flush()
    return f"Streamed {key} into {target.name} with pg_restore."


def _restore_parallel(
    job: Job, storage: LocalStorage, key: keys.DumpKey, manifest: dict, target: Any
) -> str:
    """Unpack (checking the dump: nothing is created from a damaged one), then
    create the temporary database and restore into it with several jobs."""
    workdir = Path(tempfile.mkdtemp(prefix=unpack_prefix(job.pk), dir=conf.temp_dir()))
    # Recorded so that whoever cleans up after a lost worker knows where to look.
    jobs.update_result(job, unpacked={"host": socket.gethostname(), "path": str(workdir)})
    try:
        if shutil.disk_usage(workdir).free < manifest.get("raw_size", 0) * 1.1:
            return _restore_streamed(job, storage, key, manifest, target) + (
                f" (not enough free space in {workdir.parent} to unpack it for a parallel restore)"
            )
        unpacked = workdir / "dump"
        progress = jobs.Progress(job.pk, total=manifest["size"])
        with storage.open(key) as source, open(unpacked, "wb") as out:
            streams.decompress(
                source,
                out.write,
                expected_sha256=manifest["sha256"],
                expected_raw_size=manifest.get("raw_size"),
                on_progress=progress.add,
            )
        progress.flush()
        _create_temp(live_conn(job), target.name)
        argv = postgres.pg_restore_argv(target, jobs=conf.restore_jobs(), path=str(unpacked))
        postgres.run(argv, env=target.env())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        jobs.update_result(job, unpacked=None)
    return f"Restored {key} into {target.name} with pg_restore --jobs={conf.restore_jobs()}."


def unpack_prefix(job_id: Any) -> str:
    """Folders where a restore unpacks a dump are named after the job."""
    return f"pgclone-restore-{databases.job_digits(job_id)}-"


def pre_swap(job: Job) -> None:
    """Run the pre-swap hooks against the temporary database, never the live one."""
    ensure_allowed(job)
    hook_list = job.options.get("pre_swap_hooks", [])
    if not hook_list:
        jobs.set_step_message(job, "pre_swap", "No hooks configured.")
        return
    temporary = dict(settings.DATABASES[job.database_alias])
    temporary["NAME"] = job.result["temp_database"]
    with routing.routed(temporary):
        message = hooks.run(hook_list)
    jobs.set_step_message(job, "pre_swap", message)


def swap(job: Job) -> Callable[[], None]:
    """Put the temporary database in place of the live one."""
    ensure_allowed(job)
    live = live_conn(job)
    temp = job.result["temp_database"]
    old = databases.old_name(job.pk)
    with databases.maintenance(live) as connection:
        if swapped_already(connection, job):
            # Run again after its worker was lost just after the renames: the swap
            # happened; finish what follows it.
            return finish_swapped(job, "the swap had already happened")
        holds_jobs = databases.exists(connection, live.name) and jobs.holds_jobs(live)
    if holds_jobs:
        _check_job_tables(live, temp)
    _wait_for_other_jobs(job, holds_jobs)
    if job.options.get("reversible"):
        # :current is prepared under a temporary name: the one in place now
        # stays until the swap has happened.
        with databases.maintenance(live) as connection:
            staging = _current_staging(job)
            databases.drop(connection, staging)
            databases.create_copy(connection, staging, temp)
    result = swapping.swap(
        live, live=live.name, new=temp, old_name=old, job_id=job.pk, copy_history=holds_jobs
    )
    # This process's own connections to the live database were ended by the swap.
    connections.close_all()
    jobs.update_result(job, swapped=True, swap_window_ms=round(result.window_ms, 1))
    notes = [f"warning: {warning}" for warning in result.warnings]
    kept, retired = _after_swap(job, live, result.old_name)
    message = f"Swapped {temp} into {live.name!r}; new connections waited {result.window_ms:.0f} ms"
    jobs.set_step_message(job, "swap", "; ".join([message, *notes, *kept]))
    return _dropper(job, live, retired)


def swapped_already(connection: Any, job: Job) -> bool:
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
        if databases.exists(connection, old):
            swapping.allow_connections(connection, old, allowed=True)
    jobs.update_result(job, swapped=True)
    kept, retired = _after_swap(job, live, old)
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


def _current_staging(job: Job) -> str:
    return databases.temp_name(job.pk) + "_current"


def _after_swap(job: Job, live: postgres.ConnInfo, old: str | None) -> tuple[list[str], list[str]]:
    """Put :previous / :current in place (reversible) and set aside what is no
    longer wanted under ``pgclone_old_…`` names; returns notes for the step and
    the names set aside, which are dropped once the job has succeeded (the
    sweep drops them if that never happens). Never fails the job: the restore
    already happened."""
    previous = databases.copy_name(live.name, "previous")
    current = databases.copy_name(live.name, "current")
    retired: list[str] = []
    try:
        with databases.maintenance(live) as connection:
            for which, name in (("previous", previous), ("current", current)):
                to = f"{databases.old_name(job.pk)}_{which}"
                set_aside = swapping.retire(connection, name, to)
                if set_aside:
                    retired.append(set_aside)
            if not job.options.get("reversible"):
                return [], [name for name in (old, *retired) if name]
            if old:
                databases.rename(connection, old, previous)
            databases.rename(connection, _current_staging(job), current)
            return [f"kept :previous ({previous}) and :current ({current})"], retired
    except Exception as exc:
        warning = f"warning: cleaning up after the swap failed: {jobs.describe_error(exc)}"
        return [warning], [name for name in (old, *retired) if name]


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
                    failed.append(f"{name} ({jobs.describe_error(exc).strip()})")
        if failed:
            step = job.steps.get(name="swap")
            jobs.set_step_message(
                job,
                "swap",
                f"{step.message}; warning: could not drop {', '.join(failed)}: "
                "`manage.py pgclone sweep` drops it",
            )

    return drop


def _check_job_tables(live: postgres.ConnInfo, temp: str) -> None:
    """The restored database must be able to hold this environment's job history."""
    with postgres.connect(live) as current, postgres.connect(live.with_name(temp)) as new:
        missing = databases.missing_job_columns(current, new)
    if missing:
        raise PgCloneError(
            f"The restored database lacks pgclone's job tables or columns ({missing}); "
            "job history could not follow the swap. Add 'migrate' to the pre-swap hooks."
        )


def cleanup(job: Job) -> list[str]:
    """After a failure before the swap: drop the temporary databases and the
    unpacked dump (once the swap has happened the temporary name no longer
    exists). Returns what was removed, and what is left for another host."""
    removed = []
    temp = job.result.get("temp_database")
    live = live_conn(job)
    with databases.maintenance(live) as connection:
        if temp and not swapped_already(connection, job):
            for name in (temp, _current_staging(job)):
                if databases.exists(connection, name):
                    databases.drop(connection, name)
                    removed.append(f"the temporary database {name}")
    unpacked = job.result.get("unpacked")
    if unpacked:
        if unpacked["host"] == socket.gethostname():
            shutil.rmtree(unpacked["path"], ignore_errors=True)
            removed.append(f"the unpacked dump in {unpacked['path']}")
            jobs.update_result(job, unpacked=None)
        else:
            removed.append(
                f"(the unpacked dump in {unpacked['path']} on {unpacked['host']} is removed "
                "by the next sweep or worker start there)"
            )
    return removed


STEPS = {"fetch": fetch, "restore_temp": restore_temp, "pre_swap": pre_swap, "swap": swap}


def run(name: str, job_id: Any, hostname: str | None = None) -> bool:
    """Run one step; whether the chain should go on."""
    return jobs.run_step(
        job_id, name, STEPS[name], final=name == STEP_NAMES[-1], cleanup=cleanup, hostname=hostname
    )


def run_all(job_id: Any) -> None:
    """The whole chain in this process (``--inline``)."""
    for name in STEP_NAMES:
        if not run(name, job_id):
            return
