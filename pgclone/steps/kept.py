"""Kept copies in the restore workflow (``keep_copy: true`` in a restore config).

``restore_temp`` asks :func:`copy_kept` first: when the dump (already checked
by ``fetch``: signature and location, PGCLONE_REQUIRE_SCRUBBED,
``require_scrubbed``) has a usable kept copy on this server, the temporary
database is a FILE_COPY of it and pg_restore does not run. Otherwise the dump
is loaded and, when the config asks, :func:`keep_pending` copies what it
loaded before anything of the live database (owner, grants, settings) or the
hooks touch it. That copy becomes the kept one in :func:`confirm`, once the
job has succeeded (``confirming`` wraps the swap step for it); the job's
cleanup and the sweep drop it otherwise, as they drop the temporary database,
but for a job that succeeded and whose worker was lost before it kept the
copy: the sweep keeps it then (:func:`confirm_left`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from pgclone import conf, payloads
from pgclone.engine import jobs, runner
from pgclone.exceptions import DumpNotFound, PgCloneError
from pgclone.models import Job
from pgclone.pg import databases, driver, kept_copies, ownership, postgres
from pgclone.steps import copying
from pgclone.steps.restore_swap import drop_own, live_conn
from pgclone.storage import Storage, keys

logger = logging.getLogger("pgclone")


def _names(job: Job) -> tuple[str, str, str]:
    """The dump's key, its storage location and the name of its kept copy."""
    asked = payloads.restore_options(job)
    key, location = asked.source.key, asked.storage_location
    return key, location, kept_copies.kept_name(location, key)


def copy_kept(job: Job, temp: str) -> tuple[bool, str]:
    """Make ``temp`` a copy of the dump's kept copy if there is a usable one.
    Returns whether it did, and what to say (why a copy there was not used)."""
    if job.kind != Job.Kind.RESTORE:  # a trial restore proves the dump: it loads it
        return False, ""
    key, location, name = _names(job)
    live = live_conn(job)
    with databases.maintenance(live) as connection:
        found = kept_copies.look(connection, name)
        if found is None:
            return False, ""
        why = kept_copies.refusal(found, key, location) or _unlike(connection, found, job)
        if why:
            return False, f"Did not use {name!r} as the kept copy of {key}: {why}. "
        databases.create_copy(connection, temp, name)
        ownership.set_mark(connection, temp, job.pk, live.name)
        note = kept_copies.clone_note(*kept_copies.copy_method(connection))
    made = found.mark.made if found.mark else "?"
    return True, (
        f"Copied {temp} from the kept copy {name} of {key} (kept {made}), without pg_restore{note}."
    )


def _unlike(connection: driver.Connection, found: kept_copies.Found, job: Job) -> str | None:
    """Why a kept copy would not be what this restore makes of the dump: another
    template database under it, or another encoding or locale."""
    template = conf.template_database(job.database_alias) or ""
    if found.mark and found.mark.template != template:
        made_over, here = found.mark.template or "template0", template or "template0"
        return f"it was restored over template {made_over!r}, not {here!r}"
    live = live_conn(job).name
    like = template or (live if databases.exists(connection, live) else "template0")
    if kept_copies.locale_of(connection, found.name) != kept_copies.locale_of(connection, like):
        return f"its encoding or locale differs from {like!r}'s"
    return None


def keep_pending(job: Job, temp: str) -> str:
    """When the config asks for it: copy what ``temp`` holds now (the dump as
    loaded) under the job's pending name, closed to everyone else."""
    if job.kind != Job.Kind.RESTORE or not payloads.restore_options(job).keep_copy:
        return ""  # a trial restore keeps its copy once it has compared (keep_proved)
    return _keep_pending(job, temp)


def keep_proved(step: runner.StepFunction) -> runner.StepFunction:
    """A trial restore's ``compare`` (``step``), then, when the config asks for
    it, a copy of what it proved, kept only if the trial then passes. Failing
    to make it fails nothing: the step says so."""

    @functools.wraps(step)
    def run(job: Job) -> None:
        step(job)
        if not payloads.restore_options(job).keep_copy:
            return
        try:
            note = _keep_pending(job, job.result["temp_database"])
        except PgCloneError as exc:
            note = f" Not kept: {exc}"
        except driver.Error as exc:
            note = f" Not kept: {str(exc).strip()}"
        message = job.steps.get(name="compare").message
        jobs.set_step_message(job, "compare", message + "." + note)

    return run


def _keep_pending(job: Job, temp: str) -> str:
    live = live_conn(job)
    pending = kept_copies.pending_name(job.pk)
    with databases.maintenance(live) as connection:
        drop_own(connection, pending, job)  # left by an earlier attempt of this step
        kept_copies.keep(connection, pending, temp, ownership.mark_text(job.pk, live.name))
    jobs.update_result(job, kept_pending=pending)
    _, _, name = _names(job)
    return f" Copied it to {pending}, kept as {name} once the job has succeeded."


def confirming(step: runner.StepFunction) -> runner.StepFunction:
    """``step`` (the swap; a copy's own end for ``copy``), then, once the job is
    recorded succeeded, the pending copy made the kept one before whatever
    ``step`` left to do."""

    def run(job: Job) -> Callable[[], Any]:
        afterwards = copying.finish(job) if payloads.restore_options(job).copy_to else step(job)

        def then() -> None:
            try:
                _confirm_and_say(job)
            finally:
                if afterwards is not None:
                    afterwards()

        return then

    run.__name__ = getattr(step, "__name__", "step")
    return run


def _confirm_and_say(job: Job, late: str = "") -> None:
    pending = job.result.get("kept_pending")
    if not pending:
        return
    claimed = False
    try:
        # The lock only keeps the sweep from dropping the copy while it is kept;
        # the job's own claim decides who keeps it (any role may take an
        # advisory lock: one held by another must not stop the keeping).
        with (
            databases.maintenance(live_conn(job)) as connection,
            kept_copies.pending_lock(connection, pending),
        ):
            claimed = jobs.claim_result(job, "kept_pending", pending)
            if not claimed:
                return  # the sweep (or the worker) keeps it
            note = confirm(connection, job, pending)
    except Exception as exc:
        logger.exception("pgclone job %s: keeping a copy failed", job.pk)
        error = runner.describe_error(exc).strip()
        if claimed:
            note = f"warning: the copy was not kept: {error}"
            _drop_pending(job, pending)
        else:  # still the job's to keep
            note = f"warning: the copy is not kept yet (the sweep keeps it): {error}"
    last = "record" if job.kind == Job.Kind.VERIFY else "swap"
    step = job.steps.get(name=last)
    jobs.set_step_message(job, last, f"{step.message}; {note}{late}")


def confirm_left(name: str) -> bool:
    """For the sweep: ``name`` is a pending copy whose job is over. When that job
    succeeded (its worker lost before it kept the copy), the copy is kept now
    (or dropped, as the worker would have); returns whether it was such a job's."""
    if not name.endswith(kept_copies.PENDING_SUFFIX):
        return False
    owners = Job.objects.with_id_prefix(databases.id_prefix(name.split("_")[2]))
    job = owners.filter(status=Job.Status.SUCCEEDED).first()
    if job is None or job.result.get("kept_pending") != name:
        return False
    _confirm_and_say(job, " (by the sweep: the worker was lost before it kept it)")
    return True


def confirm(connection: driver.Connection, job: Job, pending: str) -> str:
    """The job succeeded: its ``pending`` copy becomes the dump's kept copy
    (replacing an older one of pgclone's), then the oldest copies beyond the
    limits go."""
    key, location, name = _names(job)
    live = live_conn(job)
    why = ownership.reason(connection, pending, live.name, job.pk)
    if why or not databases.exists(connection, pending):
        return f"kept no copy: {pending!r} is gone or not pgclone's ({why or 'gone'})"
    existing = kept_copies.look(connection, name)
    if existing is not None:
        refused = kept_copies.refusal(existing)
        if refused:
            databases.drop(connection, pending)
            return (
                f"kept no copy: a database {name!r} exists and is not pgclone's ({refused}); "
                "whoever made it (or a superuser) should drop it"
            )
        databases.drop(connection, name)
    mark = kept_copies.KeptMark(
        key=key,
        location=location,
        job=str(job.pk),
        made=timezone.now().isoformat(timespec="seconds"),
        template=conf.template_database(job.database_alias) or "",
    )
    kept_copies.confirm(connection, pending, name, mark)
    evicted = evict(connection)
    jobs.update_result(job, kept_copy=name)
    note = f"kept a copy of {key} as {name}"
    if name in evicted:
        return f"kept no copy of {key}: it alone is beyond PGCLONE_KEPT_COPIES(_BYTES)"
    return note + (f" (dropped the older {', '.join(evicted)})" if evicted else "")


def _drop_pending(job: Job, pending: str) -> None:
    live = live_conn(job)
    try:
        with databases.maintenance(live) as connection:
            if not ownership.reason(connection, pending, live.name, job.pk):
                databases.drop(connection, pending)
    except Exception:  # the sweep drops it: its job is over
        logger.exception("pgclone job %s: dropping %s failed", job.pk, pending)


def evict(connection: driver.Connection) -> list[str]:
    """Drop pgclone's kept copies on this server, oldest first, until there are
    at most PGCLONE_KEPT_COPIES of them taking at most PGCLONE_KEPT_COPIES_BYTES."""
    ours = [found for found in kept_copies.all_kept(connection) if not kept_copies.refusal(found)]
    ours.sort(key=lambda found: found.mark.made if found.mark else "")
    limit, bound = conf.kept_copies(), conf.kept_copies_bytes()
    dropped = []
    while ours and (len(ours) > limit or (bound is not None and sum(f.size for f in ours) > bound)):
        oldest = ours.pop(0)
        databases.drop(connection, oldest.name)
        dropped.append(oldest.name)
    return dropped


def drop_orphans(storage: Storage) -> list[str]:
    """For the sweep: drop pgclone's kept copies of dumps at ``storage`` that are
    gone from it (removed by other means than prune). Copies of other storage
    locations are left to the limits: their storage is not this project's now."""

    def act(connection: driver.Connection) -> list[str]:
        dropped = []
        for found in kept_copies.all_kept(connection):
            mark = found.mark
            if kept_copies.refusal(found) or mark.location != storage.location:
                continue
            try:
                storage.complete_manifest(keys.parse_key(mark.key))
            except DumpNotFound:
                databases.drop(connection, found.name)
                dropped.append(found.name)
        return dropped

    return kept_copies.on_servers(kept_copies.servers(), act)


def copies_on(conn: postgres.ConnInfo) -> list[kept_copies.Found]:
    """pgclone's kept copies on ``conn``'s server, oldest first (``ls --local --long``)."""
    with databases.maintenance(conn) as connection:
        ours = [f for f in kept_copies.all_kept(connection) if not kept_copies.refusal(f)]
    return sorted(ours, key=lambda found: found.mark.made if found.mark else "")
