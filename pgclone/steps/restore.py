"""The restore workflow: fetch → restore_temp → pre_swap → swap (declared at the end).

``fetch`` checks the source (a dump's manifest, signature and checksum, or a
database on the server) before anything is created; ``restore_temp`` fills a
temporary database; ``pre_swap`` runs the hooks on it; ``swap`` puts it in
place of the live database.

Nothing touches the live database before ``swap``. Every earlier failure
(and a failure of the swap itself) drops the temporary database and leaves
the live one as it was.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

from pgclone import conf, hooks, payloads
from pgclone.archive import (
    containers,
    encryption,
    parallel_restore,
    planned_restore,
    restore_lists,
    streams,
)
from pgclone.engine import jobs, runner, workflow
from pgclone.exceptions import DumpNotFound, InvalidInput, PgCloneError, RestoreRefused
from pgclone.humanize import human_bytes
from pgclone.models import Job
from pgclone.pg import (
    databases,
    driver,
    extensions,
    job_tables,
    kept_copies,
    ownership,
    postgres,
    privileges,
)
from pgclone.sharing import requirement
from pgclone.steps import copying, kept, routing
from pgclone.steps.restore_progress import RestoreWatch
from pgclone.steps.restore_swap import (
    current_staging,
    drop_own,
    finish_lost,
    live_conn,
    refuse_foreign_copies,
    swap,
    swapped_already,
)
from pgclone.storage import Storage, keys, signing, storage_for
from pgclone.storage.local import LocalStorage, open_private

FORMATS = containers.READABLE


def ensure_allowed(job: Job) -> None:
    """Checked in the worker before each step (the workflow's precondition): its
    settings are the ones that count, and each step may run code from the dump."""
    if not conf.allow_restore():
        raise RestoreRefused()
    privileges.refuse_privileged(live_conn(job))


def fetch(job: Job) -> None:
    """Check the source before any database is created."""
    asked = payloads.restore_options(job)
    source = asked.source
    copying.refuse_missing(job)
    if asked.reversible:
        with databases.maintenance(live_conn(job)) as connection:
            refuse_foreign_copies(connection, job)
    if not source.is_dump:
        live = live_conn(job)
        requirement.refuse(source, None, live.name, asked.config, asked.require_scrubbed)
        _refuse_unlisted_source(source)
        with databases.maintenance(live) as connection:
            if not databases.exists(connection, source.name):
                raise DumpNotFound(missing_database_message(source, live.name))
            refuse_foreign_copy(connection, source, job)
        jobs.set_step_message(job, "fetch", f"Database {source.name!r} found.")
        return
    storage = storage_for(asked.storage_location)
    key = keys.parse_key(source.key)
    stored = storage.complete_manifest(key)
    signing.check(key, stored)  # before anything is read or created, on the bytes as stored
    manifest = payloads.Manifest.from_dict(stored)
    if manifest.compression != streams.COMPRESSION:
        raise PgCloneError(f"Dump {key} uses {manifest.compression!r}, not zstd.")
    if manifest.format not in FORMATS:
        raise PgCloneError(
            f"Dump {key} is of format {manifest.format!r}, which this pgclone can't restore "
            f"(it restores {', '.join(FORMATS)}): upgrade pgclone on the workers."
        )
    requirement.refuse(source, stored, "", asked.config, asked.require_scrubbed)
    _check_template(job)
    decryptable = ""
    if manifest.encrypted:  # before anything is created: can this worker decrypt it?
        identities = encryption.identities_for(manifest.recipients, f"Dump {key}")
        decryptable = (
            f" Encrypted with age; this worker holds the identity of {_public(identities)}."
        )
    checked = "complete"
    if _unpacks(storage, manifest):
        checked = "complete (its checksum is checked as it is unpacked)"
    elif not manifest.pre_data_sha256:
        # A container whose manifest names its pre-data's SHA-256 is read once,
        # checked as it streams (the SQL it holds runs only once checked, its
        # rows are swapped in only once the whole dump is), or not at all when
        # a kept copy of it is used. Any other dump holds SQL that would run
        # before its end: it is read twice, the first time here.
        with storage.open(key) as source:
            streams.verify(source, manifest.sha256)
        checked = "its checksum verified (read whole before anything of it runs)"
    jobs.update_result(job, manifest=stored)
    size = human_bytes(manifest.size)
    jobs.set_step_message(job, "fetch", f"{key} ({size}) found, {checked}.{decryptable}")


def _public(identities: list[Any]) -> str:
    return ", ".join(encryption.public_keys(identities))


def _decryption(key: keys.DumpKey, manifest: payloads.Manifest) -> dict[str, Any]:
    """What ``streams.decompress`` needs to decrypt an encrypted dump (nothing for
    a plain one). Looked up again here: this step may run on another worker."""
    if not manifest.encrypted:
        return {}
    return {
        "identities": encryption.identities_for(manifest.recipients, f"Dump {key}"),
        "expected_plaintext_sha256": manifest.plaintext_sha256,
    }


def _refuse_unlisted_source(source: payloads.Source) -> None:
    """Checked again in the worker: a database named with ``:NAME`` must be one of
    PGCLONE_LOCAL_SOURCES (``:previous`` and ``:current`` always may)."""
    allowed = conf.local_sources()
    if allowed is None or source.label in (":previous", ":current"):
        return
    if source.name not in allowed:
        raise InvalidInput(
            f"{source.label!r} is not a database restores may copy here: "
            f"PGCLONE_LOCAL_SOURCES allows {_names(allowed)}."
        )


def _names(allowed: list[str]) -> str:
    return ", ".join(f":{name}" for name in allowed) or "none"


def refuse_foreign_copy(connection: driver.Connection, source: payloads.Source, job: Job) -> None:
    """A ``:previous`` / ``:current`` copy (or a ``pgclone_…`` database) is copied
    only when it is pgclone's (another role may have made a database of that
    name); one made by an earlier pgclone, unmarked, is marked now."""
    pgclone_name = source.name.startswith((databases.TEMP_PREFIX, databases.OLD_PREFIX))
    if source.label not in (":previous", ":current") and not pgclone_name:
        return
    live = live_conn(job).name
    found = ownership.look(connection, [source.name], [live]).get(source.name)
    if found is None:
        return
    reason = ownership.refusal(found, live)
    if reason:
        raise RestoreRefused(
            f"Refusing to restore {source.label}: database {source.name!r} is not a copy "
            f"pgclone kept ({reason}). Nothing was copied; the live database is unchanged. "
            "Whoever made it (or a superuser) should drop it."
        )
    if found.mark is None and not pgclone_name:  # a job's own database keeps the job's mark
        ownership.set_mark(connection, source.name, job.pk, live)


def missing_database_message(source: payloads.Source, live: str) -> str:
    label = source.label
    if label in (":previous", ":current"):
        return (
            f"No {label} copy of {live!r} exists: only a restore made with --reversible "
            "keeps one (and a later restore without it removes them)."
        )
    return f"No database {source.name!r} on the server: `manage.py pgclone ls --local` lists them."


def restore_temp(job: Job) -> None:
    """Create the temporary database and fill it."""
    live = live_conn(job)
    temp = databases.temp_name(job.pk)
    jobs.update_result(job, temp_database=temp)
    asked = payloads.restore_options(job)
    source = asked.source
    with databases.maintenance(live) as connection:
        drop_own(connection, temp, job)  # left by an earlier attempt of this step
    copied = False
    if not source.is_dump:
        with databases.maintenance(live) as connection:
            refuse_foreign_copy(connection, source, job)
            databases.create_copy(connection, temp, source.name)
            ownership.set_mark(connection, temp, job.pk, live.name)
        job_tables.clear_job_tables(live, temp)
        message = f"Copied {source.name!r} into {temp}."
    else:  # a copy of the dump's kept copy, if it has a usable one
        copied, message = kept.copy_kept(job, temp)
    if source.is_dump and not copied:
        storage = storage_for(asked.storage_location)
        key = keys.parse_key(source.key)
        manifest = payloads.manifest_of(job)
        target = live.with_name(temp)
        if _unpacks(storage, manifest):
            message += _restore_parallel(job, storage, key, manifest, target)
        else:
            message += _restore_streamed(job, storage, key, manifest, target)
        message += kept.keep_pending(job, temp)  # before the live database's settings
    # The pre-swap hooks must see the database as it will be once in place:
    # with the live database's search_path and other settings (a copy is the dump's own).
    with databases.maintenance(live) as connection:
        carried = [] if asked.copy_to else databases.carry_over(connection, live.name, temp)
    if carried:
        message += " Kept the live database's " + ", ".join(carried) + "."
    jobs.set_step_message(job, "restore_temp", message)


def _unpacks(storage: Storage, manifest: payloads.Manifest) -> bool:
    """A plain dump made before the container (one pg_dump archive), in local
    storage, is unpacked to a file for a parallel pg_restore (which needs a
    file it can seek in); in S3 it is streamed, and so is an encrypted one:
    unpacked, it would lie on this disk decrypted. A container is never
    unpacked (:func:`_restore_in_sessions`)."""
    return (
        manifest.format == containers.CUSTOM
        and isinstance(storage, LocalStorage)
        and conf.restore_jobs() > 1
        and not manifest.encrypted
    )


def _check_template(job: Job) -> str | None:
    """The PGCLONE_TEMPLATE_DATABASE of the job's database, if any, once it is
    checked: in fetch (before anything is unpacked or created), and again
    before it is copied (the next step may run on a worker set up otherwise)."""
    template = conf.template_database(job.database_alias)
    if template:
        live = live_conn(job)
        with databases.maintenance(live) as connection:
            extensions.check_template(connection, template, live.name)
    return template


def _create_temp(job: Job, temp: str) -> extensions.Installed:
    """The temporary database: a copy of the PGCLONE_TEMPLATE_DATABASE or an
    empty one; returns what it holds that the restore leaves alone."""
    live = live_conn(job)
    template = _check_template(job)
    with databases.maintenance(live) as connection:
        databases.create_empty(connection, temp, like=live.name, template=template)
        ownership.set_mark(connection, temp, job.pk, live.name)
    return extensions.Installed.inspect(live.with_name(temp), template)


def _checks(key: keys.DumpKey, manifest: payloads.Manifest, on_progress: Any) -> dict[str, Any]:
    """What ``streams.decompress`` checks a dump against (and decrypts it with)."""
    return {
        "expected_sha256": manifest.sha256,
        "expected_raw_size": manifest.raw_size,
        "on_progress": on_progress,
        **_decryption(key, manifest),
    }


def _restore_streamed(
    job: Job, storage: Storage, key: keys.DumpKey, manifest: payloads.Manifest, target: Any
) -> str:
    if manifest.format == containers.FORMAT:
        return _restore_in_sessions(job, storage, key, manifest, target)
    installed = _create_temp(job, target.name)
    raw_size = manifest.raw_size or 0
    with (
        RestoreWatch(job.pk, live_conn(job), target.name, raw_size) as watch,
        storage.open(key) as source,
    ):
        # The server's view of the COPYs where it has one; else the dump read so far.
        progress = None if watch.active else runner.Progress(job.pk, total=manifest.size)
        checks = _checks(key, manifest, progress.add if progress else _ignore)
        if manifest.format in containers.FORMATS:
            rows = planned_restore.restore_streamed(source, target, checks, installed)
        else:
            argv = postgres.pg_restore_argv(target)
            sink = restore_lists.ListedSink(argv, target.env(), installed.edit)
            try:
                streams.decompress(source, sink.write, **checks)
            except BaseException:
                sink.abort()
                raise
            sink.close()
    if progress:
        progress.flush()
    if manifest.format in containers.FORMATS:
        copied = "the planned tables" if manifest.plan else "the tables"
        return (
            f"Streamed {key} into {target.name}: pg_restore, COPY of {copied} "
            f"({rows} rows), pg_restore."
        )
    return f"Streamed {key} into {target.name} with pg_restore."


def _ignore(_: int) -> None:
    """Bytes read, when the server reports the restore's own progress."""


def _restore_in_sessions(
    job: Job, storage: Storage, key: keys.DumpKey, manifest: payloads.Manifest, target: Any
) -> str:
    """A container, from any storage, encrypted or not, read once: its rows
    loaded by PGCLONE_RESTORE_JOBS sessions at once, then its indexes and
    constraints built by ``pg_restore --jobs``. The one file written is its
    post-data archive (no table data), in a folder of the job's own, recorded
    so that whoever cleans up after a lost worker removes it."""
    sessions = max(1, conf.restore_jobs())
    workdir = Path(tempfile.mkdtemp(prefix=unpack_prefix(job.pk), dir=conf.temp_dir()))
    jobs.update_result(job, unpacked={"host": socket.gethostname(), "path": str(workdir)})
    try:
        installed = _create_temp(job, target.name)
        restore = parallel_restore.ParallelRestore(
            target, sessions, workdir, installed, pre_data_sha256=manifest.pre_data_sha256
        )
        with (
            RestoreWatch(
                job.pk, live_conn(job), target.name, manifest.raw_size or 0, loaded=restore.loaded
            ) as watch,
            storage.open(key) as source,
        ):
            progress = None if watch.active else runner.Progress(job.pk, total=manifest.size)
            checks = _checks(key, manifest, progress.add if progress else _ignore)
            rows = restore.run(source, checks)
        if progress:
            progress.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        jobs.update_result(job, unpacked=None)
    copied = "the planned tables" if manifest.plan else "the tables"
    return (
        f"Restored {key} into {target.name}: pg_restore of the schema, COPY of {copied} "
        f"in {restore.sessions} {_plural(restore.sessions, 'session')} ({rows} rows), "
        f"pg_restore --jobs={sessions}."
    )


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


def _restore_parallel(
    job: Job, storage: LocalStorage, key: keys.DumpKey, manifest: payloads.Manifest, target: Any
) -> str:
    """A plain dump made before the container (one pg_dump archive): unpack it
    (checking it: nothing is created from a damaged one), then create the
    temporary database and restore into it with several jobs."""
    workdir = Path(tempfile.mkdtemp(prefix=unpack_prefix(job.pk), dir=conf.temp_dir()))
    # Recorded so that whoever cleans up after a lost worker knows where to look.
    jobs.update_result(job, unpacked={"host": socket.gethostname(), "path": str(workdir)})
    try:
        if shutil.disk_usage(workdir).free < (manifest.raw_size or 0) * 1.1:
            return _restore_streamed(job, storage, key, manifest, target) + (
                f" (not enough free space in {workdir.parent} to unpack it for a parallel restore)"
            )
        unpacked = workdir / "dump"
        progress = runner.Progress(job.pk, total=manifest.size, label="unpacking the dump")
        with storage.open(key) as source, open_private(unpacked) as out:
            streams.decompress(source, out.write, **_checks(key, manifest, progress.add))
        progress.flush()
        installed = _create_temp(job, target.name)
        with RestoreWatch(job.pk, live_conn(job), target.name, manifest.raw_size or 0):
            path = str(unpacked)
            argv = postgres.pg_restore_argv(target, jobs=conf.restore_jobs(), path=path)
            restore_lists.run(argv, path=path, env=target.env(), edit=installed.edit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        jobs.update_result(job, unpacked=None)
    return f"Restored {key} into {target.name} with pg_restore --jobs={conf.restore_jobs()}."


def unpack_prefix(job_id: Any) -> str:
    """Folders where a restore unpacks a dump are named after the job."""
    return f"pgclone-restore-{databases.job_digits(job_id)}-"


def pre_swap(job: Job) -> None:
    """Run the pre-swap hooks against the temporary database, never the live one."""
    hook_list = list(payloads.restore_options(job).pre_swap_hooks)
    if not hook_list:
        jobs.set_step_message(job, "pre_swap", "No hooks configured.")
        return
    temporary = dict(settings.DATABASES[job.database_alias])
    temporary["NAME"] = job.result["temp_database"]
    with routing.routed(temporary):
        message = hooks.run(hook_list)
    jobs.set_step_message(job, "pre_swap", message)


def cleanup(job: Job) -> list[str]:
    """After a failure before the swap: drop the temporary databases (once the
    swap has happened the temporary name no longer exists) and the restore's
    scratch folder (a container's post-data archive, an older dump unpacked).
    Returns what was removed, and what is left for another host."""
    removed = []
    temp = job.result.get("temp_database")
    live = live_conn(job)
    with databases.maintenance(live) as connection:
        if temp and not swapped_already(connection, job):
            for name in (temp, current_staging(job), kept_copies.pending_name(job.pk)):
                why = ownership.reason(connection, name, live.name, job.pk)
                if why:
                    removed.append(f"(not {name}, which is not pgclone's: {why})")
                elif databases.exists(connection, name):
                    databases.drop(connection, name)
                    removed.append(f"the temporary database {name}")
    unpacked = job.result.get("unpacked")
    if unpacked:
        if unpacked["host"] == socket.gethostname():
            shutil.rmtree(unpacked["path"], ignore_errors=True)
            removed.append(f"the restore's scratch folder {unpacked['path']}")
            jobs.update_result(job, unpacked=None)
        else:
            removed.append(
                f"(the restore's scratch folder {unpacked['path']} on {unpacked['host']} is "
                "removed by the next sweep or worker start there)"
            )
    return removed


WORKFLOW = workflow.Workflow(
    kind=Job.Kind.RESTORE,
    steps=(
        workflow.Step("fetch", fetch),
        workflow.Step("restore_temp", restore_temp),
        workflow.Step("pre_swap", pre_swap),
        # Stopping half-way through the swap would be the one way to leave things
        # worse than either finishing or not starting.
        workflow.Step("swap", kept.confirming(swap), cancellable=False),
    ),
    cleanup=cleanup,
    precondition=ensure_allowed,
    finish_lost=finish_lost,
)
