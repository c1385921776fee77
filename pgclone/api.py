"""The use-cases: what the management command, the admin and beat all call.

No workflow lives anywhere else: entry points parse their input, call one
of these functions and render what it returns.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from pgclone import conf, humanize, retention, starting, sweeping
from pgclone.engine import jobs
from pgclone.exceptions import (
    InvalidInput,
    PgCloneError,
    RestoreRefused,
)
from pgclone.models import Job
from pgclone.pg import job_tables, postgres, privileges
from pgclone.sharing import requirement
from pgclone.steps import copying, kept, leaving_out, options

# Re-exported: the command and the admin list what `restore :…` can copy through the API.
from pgclone.steps.sources import local_sizes as local_sizes
from pgclone.steps.sources import local_sources as local_sources
from pgclone.steps.sources import named_dump as named_dump
from pgclone.steps.sources import resolve_source
from pgclone.storage import Storage, get_storage, keys
from pgclone.storage.base import DumpInfo

logger = logging.getLogger("pgclone")


def dump(
    *,
    config: str | None = None,
    exclude_models: list[str] | None = None,
    pre_dump_hooks: list[str] | None = None,
    database: str = "default",
    requested_by: str | None = None,
    inline: bool = False,
    on_start: Callable[[Job], Any] | None = None,
) -> Job:
    """Start a dump job (enqueued, or run here when ``inline``) and return it.

    Bad input fails the job at once and raises, so nothing is enqueued.
    With ``inline`` the job has ended when this returns; a failure is on the
    returned job, not raised. ``on_start(job)`` is called once the job is
    accepted, before it runs (the command uses it to show progress).
    """
    requested = {
        "config": config,
        "exclude_models": exclude_models,
        "pre_dump_hooks": pre_dump_hooks,
    }
    job = starting.new_job(
        Job.Kind.DUMP,
        database=database,
        database_name="",
        config=config,
        requested=requested,
        requested_by=requested_by,
    )
    with starting.failing(job):
        resolved = options.resolve_dump_options(
            config=config,
            exclude_models=exclude_models,
            pre_dump_hooks=pre_dump_hooks,
            database=database,
        )
        storage = get_storage()
        storage.check()
    return starting.launch(
        job,
        resolved,
        storage,
        inline=inline,
        on_start=on_start,
        database_name=resolved.database_name,
    )


def restore(
    target: str,
    *,
    config: str | None = None,
    pre_swap_hooks: list[str] | None = None,
    reversible: bool = False,
    database: str = "default",
    requested_by: str | None = None,
    inline: bool = False,
    on_start: Callable[[Job], Any] | None = None,
) -> Job:
    """Start a restore of ``target`` into the ``database`` alias; see ``dump``.

    Refused (a failed job, and RestoreRefused raised) when restores are
    disabled or another restore of the same database is under way.
    """
    live = postgres.conn_info(database)

    def already_under_way() -> RestoreRefused:
        running = (
            Job.objects.active().filter(kind=Job.Kind.RESTORE, database_name=live.name).first()
        )
        return RestoreRefused(
            f"A restore of database {live.name!r} is already under way"
            + (f" (job {running.pk}, {_liveliness(running)})" if running else "")
            + ". Wait for it to end, or stop it with `manage.py pgclone cancel "
            + (f"{running.pk}`." if running else "JOB_ID`.")
        )

    requested = {
        "target": target,
        "config": config,
        "pre_swap_hooks": pre_swap_hooks,
        "reversible": reversible,
    }
    job = starting.new_job(
        Job.Kind.RESTORE,
        database=database,
        database_name=live.name,
        config=config,
        requested=requested,
        requested_by=requested_by,
        refused=None if conf.allow_restore() else RestoreRefused(),
        on_conflict=already_under_way,
    )
    with starting.failing(job):
        privileges.refuse_privileged(live)
        _refuse_while_in_use(job, live)
        resolved = options.resolve_restore_options(
            config=config, pre_swap_hooks=pre_swap_hooks, reversible=reversible, database=database
        )
        storage = get_storage()
        resolved = dataclasses.replace(resolved, source=resolve_source(target, live.name))
        _refuse_unscrubbed(storage, resolved)
        copying.refuse_missing_database(live, database, resolved)
    return starting.launch(
        job, resolved, storage, inline=inline, on_start=on_start, dump_key=resolved.source.key
    )


def copy(
    target: str,
    new_name: str,
    *,
    config: str | None = None,
    database: str = "default",
    requested_by: str | None = None,
    inline: bool = False,
    on_start: Callable[[Job], Any] | None = None,
) -> Job:
    """Start a copy of dump ``target`` (a key, or a database name for its newest
    dump) into a new database ``new_name`` on the ``database`` alias's server:
    from the dump's kept copy in template time, or loaded (and a copy kept) when
    there is none. Owned by the role pgclone connects as; no hooks, no swap.
    The dump's checks are a restore's (``config`` may require scrubbed dumps)."""
    live = postgres.conn_info(database)
    job = starting.new_job(
        Job.Kind.RESTORE,
        database=database,
        database_name=new_name,
        config=config,
        requested={"target": target, "config": config, "copy_to": new_name},
        requested_by=requested_by,
        refused=None if conf.allow_restore() else RestoreRefused(),
        on_conflict=lambda: RestoreRefused(f"A copy into {new_name!r} is already under way."),
    )
    with starting.failing(job):
        privileges.refuse_privileged(live)
        copying.check_new_name(live, new_name)
        resolved = options.resolve_restore_options(config=config, database=database)
        resolved = dataclasses.replace(
            resolved,
            source=resolve_source(target, live.name),
            pre_swap_hooks=(),
            reversible=False,
            keep_copy=True,
            copy_to=new_name,
        )
        if not resolved.source.is_dump:
            raise InvalidInput(f"{target!r} is a database, not a dump: copy takes a dump.")
        storage = get_storage()
        _refuse_unscrubbed(storage, resolved)
    return starting.launch(
        job, resolved, storage, inline=inline, on_start=on_start, dump_key=resolved.source.key
    )


def trial_restore(
    target: str,
    *,
    config: str | None = None,
    pre_swap_hooks: list[str] | None = None,
    database: str = "default",
    requested_by: str | None = None,
    inline: bool = False,
    on_start: Callable[[Job], Any] | None = None,
) -> Job:
    """Start a trial restore (``verify --restore``) of ``target``, a dump key or a
    database name (its newest dump): restored into a scratch database on the
    ``database`` alias's server with the restore config's hooks, checked
    against what the dump recorded, never swapped in; the outcome is kept on
    the job and beside the dump. See ``dump`` for the rest."""
    live = postgres.conn_info(database)
    job = starting.new_job(
        Job.Kind.VERIFY,
        database=database,
        database_name="",
        config=config,
        requested={"target": target, "config": config, "pre_swap_hooks": pre_swap_hooks},
        requested_by=requested_by,
    )
    with starting.failing(job):
        if target.strip().startswith(":"):
            raise InvalidInput(
                f"{target!r} is a database, not a dump: a trial restore takes a dump key, "
                "or a database name for its newest dump."
            )
        privileges.refuse_privileged(live)
        resolved = options.resolve_restore_options(
            config=config, pre_swap_hooks=pre_swap_hooks, reversible=False, database=database
        )
        storage = get_storage()
        source = resolve_source(target, live.name)
        resolved = dataclasses.replace(resolved, source=source)
        _refuse_unscrubbed(storage, resolved)
    dumped = keys.parse_key(source.key).database
    return starting.launch(
        job,
        resolved,
        storage,
        inline=inline,
        on_start=on_start,
        dump_key=source.key,
        database_name=dumped,
    )


def _refuse_unscrubbed(storage: Storage, resolved: Any) -> None:
    """``require_scrubbed`` (PGCLONE_REQUIRE_SCRUBBED, or the restore config's):
    refused when asked (the worker's fetch checks again)."""
    if not requirement.in_force(resolved.require_scrubbed):
        return
    source = resolved.source
    manifest = storage.complete_manifest(keys.parse_key(source.key)) if source.is_dump else None
    requirement.refuse(
        source, manifest, resolved.database_name, resolved.config, resolved.require_scrubbed
    )


def verify_latest(
    names: list[str] | None = None, *, database: str = "default", requested_by: str | None = None
) -> list[Job]:
    """Start a trial restore of the newest dump of each named database (of every
    dumped database when None). One that can't start is logged and on its job;
    the others start all the same."""
    started = []
    for name in names or database_names():
        try:
            started.append(trial_restore(name, database=database, requested_by=requested_by))
        except PgCloneError as exc:
            logger.error("pgclone: no trial restore of %r's newest dump: %s", name, exc)
    return started


def health(names: list[str] | None = None, *, max_age: str | None = None) -> list[Any]:
    """Whether each database (every dumped one when None) has a dump younger than
    ``max_age`` (``26h`` by default) whose last trial restore, if any, passed."""
    from pgclone import health as checks

    return checks.check(get_storage(), names, max_age=max_age)


def _refuse_while_in_use(job: Job, live: postgres.ConnInfo) -> None:
    """The swap ends every session on the database it replaces: refuse a restore
    while another job uses that database (or, when it holds pgclone's job
    tables, while any other job runs: they all write their progress there)."""
    others = jobs.using_database(job, everything=job_tables.holds_jobs(live), running_only=False)
    if others:
        other = others[0]
        raise RestoreRefused(
            f"Job {other.pk} ({other.kind} of {other.database_name or other.database_alias!r}, "
            f"{_liveliness(other)}) uses database {live.name!r}, and the swap would end its "
            "sessions. Restore once it is over, or stop it with `manage.py pgclone cancel "
            f"{other.pk}`."
        )


def _liveliness(job: Job) -> str:
    if job.heartbeat_at is None:
        return job.status
    age = (timezone.now() - job.heartbeat_at).total_seconds()
    return f"{job.status}, last heartbeat {humanize.human_seconds(age)} ago"


def sweep() -> list[Job]:
    """Fail jobs whose worker was lost and remove what they left; return them."""
    return sweeping.sweep()


def ls(database: str | None = None) -> list[keys.DumpKey]:
    """Complete dumps in storage that can be used, oldest first; one database's if
    named. Damaged or refused ones are left out (``dump_infos`` lists them, with why)."""
    return [info.key for info in dump_infos(database) if not info.damaged]


def dump_infos(database: str | None = None) -> list[DumpInfo]:
    """Complete dumps with their manifests (``ls --long``), oldest first; a dump
    whose manifest is damaged comes with why (it can't be restored)."""
    if database is not None:
        keys.validate_database_name(database)
    return get_storage().infos(database)


def kept_copies(database: str = "default") -> list[Any]:
    """pgclone's kept copies on ``database``'s server, oldest first: each one's
    name, size and dump (``kept_copies.Found``)."""
    return kept.copies_on(postgres.conn_info(database))


def database_names() -> list[str]:
    """Names of the databases that have at least one complete dump that can be used."""
    return sorted({key.database for key in ls()})


def prune(*, dry_run: bool = False, database: str | None = None) -> retention.Pruning:
    """Apply the retention rules of PGCLONE_DUMP_CONFIGS to the dumps in storage.

    Returns what was deleted (or with ``dry_run`` what would be), and the dumps
    left alone because they can't be used (damaged or refused): retention neither
    counts nor deletes those.
    """
    if database is not None:
        keys.validate_database_name(database)
    storage = get_storage()
    if dry_run:
        return retention.review(storage, database=database)
    return retention.prune(storage, database=database)


def verify(key_text: str) -> dict[str, Any]:
    """Check a dump without restoring it: complete, its checksum, an archive
    that pg_restore can read, and foreign keys that a restore can re-create
    (see ``pgclone.verifying``). Raises DumpNotFound or DumpDamaged; returns
    the manifest with the number of archive entries added."""
    from pgclone import verifying

    return verifying.verify(get_storage(), keys.parse_key(key_text))


def verify_leaks(key_text: str, database: str = "default") -> dict[str, Any]:
    """Search a stored scrubbed dump for the current original values of its
    scrubbed columns in ``database`` (an alias); raises LeakFound naming where
    one was found (see ``pgclone.verifying.verify_leaks``)."""
    from pgclone import verifying

    return verifying.verify_leaks(get_storage(), keys.parse_key(key_text), database)


def keygen() -> tuple[str, str]:
    """A new age identity (secret) and its recipient (public), for encrypted dumps."""
    from pgclone.archive import encryption

    return encryption.generate()


def cancel(job_id: Any, *, requested_by: str | None = None) -> Job:
    """Cancel a pending or running job; its worker stops it within seconds."""
    found = jobs.get_job(job_id)
    from pgclone.steps.workflows import workflow_for  # loaded only once there is a job

    uncancellable = workflow_for(found.kind).uncancellable
    if not jobs.cancel(found, requested_by or starting.default_requester(), uncancellable):
        found.refresh_from_db()
        if found.is_finished:
            raise PgCloneError(f"Job {found.pk} has already ended ({found.status}).")
        raise PgCloneError(
            f"Job {found.pk} is swapping databases, which takes a moment and can't be "
            "stopped half-way; it is too late to cancel it."
        )
    found.refresh_from_db()
    return found


def job(job_id: Any) -> Job:
    return jobs.get_job(job_id)


def recent_jobs(limit: int = 20) -> list[Job]:
    return list(Job.objects.all()[:limit])


def scrub_check(
    config: str | None = None, *, database: str | None = None, skeleton: bool = False
) -> list[leaving_out.ConfigReview]:
    """What each config that scrubs (or ``config`` alone, scrubbing or not) decides
    for the columns of ``database``'s tables (an alias; ``default`` if None), and
    the columns it leaves undecided; ``skeleton``: those as config text."""
    names = [config] if config is not None else leaving_out.scrubbing_configs()
    alias = database or DEFAULT_DB_ALIAS
    return [leaving_out.review_config(name, alias, skeleton=skeleton) for name in names]
