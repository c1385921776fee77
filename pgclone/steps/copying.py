"""``copy KEY NEWNAME``: a restore job that ends with a new database instead of a swap,
and ``create_missing``: whether a restore may create the database an alias names.

A copy runs the restore workflow with ``copy_to`` set: ``fetch`` checks the
dump as for any restore, ``restore_temp`` copies the dump's kept copy (or
loads the dump and keeps a copy, which ``copy`` always asks for), no hook
runs, nothing of the alias's database is carried over, and the last step
renames the temporary database to NEWNAME, owned by the role pgclone
connects as. The alias only says which server and which role.
"""

from __future__ import annotations

from collections.abc import Callable

from pgclone import payloads
from pgclone.engine import jobs
from pgclone.exceptions import InvalidInput, PgCloneError, RestoreRefused
from pgclone.models import Job
from pgclone.pg import databases, kept_copies, ownership, postgres
from pgclone.steps.restore_swap import live_conn

RESERVED_PREFIX = "pgclone_"


def check_new_name(conn: postgres.ConnInfo, name: str) -> None:
    """NEWNAME must be a free name that fits PostgreSQL and is not one of pgclone's."""
    if not name or len(name.encode()) > databases.MAX_IDENTIFIER_BYTES:
        raise InvalidInput(f"{name!r} is not a database name: give 1 to 63 bytes.")
    if name.startswith(RESERVED_PREFIX) or name == "postgres":
        raise InvalidInput(f"{name!r} is reserved: names starting with pgclone_ are pgclone's.")
    with databases.maintenance(conn) as connection:
        if databases.exists(connection, name):
            raise InvalidInput(
                f"Database {name!r} exists already: copy never replaces a database. "
                "Pick another name, or drop it first."
            )


def refuse_missing(job: Job) -> None:
    """Checked again in the worker's fetch (its settings count); a trial restore
    creates only its scratch database."""
    if job.kind != Job.Kind.RESTORE:
        return
    refuse_missing_database(live_conn(job), job.database_alias, payloads.restore_options(job))


def refuse_missing_database(
    live: postgres.ConnInfo, alias: str, asked: payloads.RestoreOptions
) -> None:
    """A restore creates the database its alias names only when the restore
    config says ``create_missing: true``: a mistyped alias makes nothing."""
    if asked.copy_to or asked.create_missing:
        return
    with databases.maintenance(live) as connection:
        if databases.exists(connection, live.name):
            return
    raise RestoreRefused(
        f"Database {live.name!r} (alias {alias}) does not exist on its server, and the "
        f"restore config {asked.config!r} does not say create_missing: true. Nothing was "
        "created: check the alias, or restore with a config that allows creating it."
    )


def finish(job: Job) -> Callable[[], None] | None:
    """The copy's last step: the temporary database becomes NEWNAME, unmarked
    (it is the user's now), in one transaction."""
    asked = payloads.restore_options(job)
    live = live_conn(job)
    temp = job.result["temp_database"]
    with databases.maintenance(live) as connection:
        if not databases.exists(connection, temp) and databases.exists(connection, asked.copy_to):
            return None  # run again after its worker was lost just after the rename
        problem = ownership.check(connection, temp, live.name, job.pk)
        if problem:
            raise PgCloneError(f"Can't finish the copy: {problem}.")
        if databases.exists(connection, asked.copy_to):
            raise PgCloneError(
                f"Database {asked.copy_to!r} was created by someone else while the copy ran: "
                "nothing was copied over it."
            )
        kept_copies.rename_commented(connection, temp, asked.copy_to, None)
    jobs.update_result(job, copied_to=asked.copy_to)
    jobs.set_step_message(
        job, "swap", f"Renamed {temp} to {asked.copy_to!r}; no hook ran, nothing was swapped"
    )
    return None
