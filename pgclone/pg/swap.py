"""The swap: the one moment a restore touches the live database.

Inside the *window* new connections to the live database are refused, its
sessions are ended, the job history is copied across and the two renames
commit in one transaction. Whatever goes wrong in there, the live name ends
up naming a whole database that accepts connections:

- A failure the running worker sees is handled at once, on a fresh
  connection: after a failed statement (a failed COMMIT above all) the driver
  may believe a connection idle while the server still holds it in an
  aborted transaction. The catalog, not the failed statement, then says
  whether the renames committed.
- A worker that dies inside the window can't clean up. Before the window
  the new database's comment is set to a *marker* naming the live database
  and the job; it lives outside the live database and survives any crash.
  The sweep and every worker start (:func:`reopen_abandoned`) re-open a live
  database that such a marker names once the job's sessions are gone.

The guard on the renames is a ``statement_timeout`` on the rename statements
only: it is set back to 0 before COMMIT, so it can never cancel the commit,
and a timeout that fires at the very end of a rename surfaces at that reset,
before COMMIT. A rename that times out (a lock held elsewhere, a slow disk)
is retried on a fresh connection with a longer timeout until
PGCLONE_SWAP_TIMEOUT; only then does the swap give up, with the live
database as it was.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgclone import conf
from pgclone.exceptions import PgCloneError
from pgclone.pg import driver, ownership, postgres
from pgclone.pg.databases import (
    OLD_PREFIX,
    TEMP_PREFIX,
    drop,
    execute,
    exists,
    id_prefix,
    rename,
)
from pgclone.pg.driver import errors, sql
from pgclone.pg.job_tables import JobHistoryCopy

MARKER_PREFIX = ownership.SWAP_PREFIX
TERMINATE_TIMEOUT_MS = 5000
# The first rename gets little time (a session still exiting makes PostgreSQL
# sleep 100 ms before looking again); each retry doubles it, up to the cap.
FIRST_RENAME_TIMEOUT_MS = 20
MAX_RENAME_TIMEOUT_MS = 5000
# Errors after which a rename is worth trying again on a fresh connection.
RETRYABLE = (
    errors.ObjectInUse,
    errors.QueryCanceled,
    errors.LockNotAvailable,
    driver.OperationalError,
    driver.InterfaceError,
)


@dataclass
class SwapResult:
    window_ms: float
    old_name: str | None
    warnings: list[str] = field(default_factory=list)


class Session:
    """The swap's connection to the server's ``postgres`` database, autocommit.

    ``renew()`` replaces it with a fresh one: what runs after an error never
    runs on a connection whose state is in doubt.
    """

    def __init__(self, conn: postgres.ConnInfo) -> None:
        self.conn = conn.with_name("postgres")
        self.connection: Any = None
        self.renew()

    def renew(self) -> Any:
        self.close()
        self.connection = postgres.open_connection(self.conn)
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(driver.Error):
                self.connection.close()
            self.connection = None


def swap(
    conn: postgres.ConnInfo,
    *,
    live: str,
    new: str,
    old_name: str,
    job_id: Any,
    history: Callable[[], JobHistoryCopy] | None = None,
) -> SwapResult:
    """Put ``new`` in place of ``live``; the old database ends up as ``old_name``.

    ``conn`` carries the job's application name: the sweep tells a swap in
    progress from an abandoned one by the job's sessions. ``history`` prepares
    the copy of the job history (when ``live`` holds the job tables). Returns
    how long new connections were refused; raises, with the live database
    re-opened and unchanged, when the swap could not happen.
    """
    session = Session(conn)
    try:
        if not exists(session.connection, live):
            rename(session.connection, new, live)
            _set_comment(session.connection, live, None)  # a live database bears no mark
            return SwapResult(0.0, None)
        # The live database's comment goes to the new one; the old one gets the job's mark.
        comments = (_comment(session.connection, live), ownership.mark_text(job_id, live))
        _set_comment(session.connection, new, marker(job_id, live))
        copy = history() if history is not None else None
        started = time.monotonic()
        try:
            _window(session, live=live, new=new, old_name=old_name, comments=comments, history=copy)
        except BaseException as exc:
            swapped = _recover(session, live=live, new=new, old_name=old_name, mark=comments[1])
            if not (swapped and isinstance(exc, Exception)):
                raise
            # The renames had committed before the error: the swap happened.
        finally:
            if copy is not None:
                copy.close()
        window_ms = (time.monotonic() - started) * 1000
        warnings = []
        try:
            allow_connections(session.connection, old_name, allowed=True)
        except driver.Error as exc:
            warnings.append(f"could not re-open {old_name!r} to connections: {exc}")
        return SwapResult(window_ms, old_name, warnings)
    finally:
        session.close()


def _window(
    session: Session,
    *,
    live: str,
    new: str,
    old_name: str,
    comments: tuple[str | None, str],
    history: JobHistoryCopy | None,
) -> None:
    allow_connections(session.connection, live, allowed=False)
    _terminate_sessions(session.connection, (live, new), keep=history.pids() if history else ())
    if history is not None:
        history.copy()
    deadline = time.monotonic() + conf.swap_timeout_seconds()
    timeout_ms = FIRST_RENAME_TIMEOUT_MS
    while True:
        try:
            _rename_pair(session.connection, live, old_name, new, comments, timeout_ms)
            return
        except RETRYABLE as exc:
            connection = session.renew()
            if renamed(connection, live=live, new=new, old_name=old_name):
                return  # the commit went through: only its answer was lost
            if time.monotonic() > deadline:
                raise PgCloneError(
                    f"Could not rename {live!r} within PGCLONE_SWAP_TIMEOUT "
                    f"({conf.swap_timeout_seconds():g}s): {str(exc).strip()}"
                    f"{_blockers(connection, live)}. Nothing was swapped; the live database is "
                    "as it was and accepts connections again."
                ) from exc
            # A session still exiting, autovacuum, a lock held elsewhere, a slow
            # disk: end what is connected and try again, a little more patiently.
            _terminate_sessions(connection, (live, new), keep=())
            timeout_ms = min(timeout_ms * 2, MAX_RENAME_TIMEOUT_MS)


def _rename_pair(
    connection: driver.Connection,
    live: str,
    old_name: str,
    new: str,
    comments: tuple[str | None, str],
    timeout_ms: int,
) -> None:
    """Both renames and the comments in one transaction: the new live database
    gets the live one's, the old one pgclone's mark (so that it is known as
    pgclone's from the moment it bears a pgclone name).

    On an error the connection is left as it is: the caller renews it.
    """
    connection.autocommit = False
    execute(connection, "SELECT set_config('statement_timeout', %s, true)", [f"{timeout_ms}ms"])
    rename(connection, live, old_name)
    rename(connection, new, live)
    _set_comment(connection, live, comments[0])
    _set_comment(connection, old_name, comments[1])
    execute(connection, "SELECT set_config('statement_timeout', '0', true)")
    connection.commit()
    connection.autocommit = True


def _recover(session: Session, *, live: str, new: str, old_name: str, mark: str) -> bool:
    """After a failure in the window: on a fresh connection, find out whether the
    renames committed (returns True); if not, let connections in again and put
    the job's ``mark`` back in place of the marker. What can't be done here (the
    server out of reach) is left to the sweep: the marker says what to do."""
    try:
        connection = session.renew()
        if renamed(connection, live=live, new=new, old_name=old_name):
            return True
        allow_connections(connection, live, allowed=True)
        _set_comment(connection, new, mark)
    except (driver.Error, PgCloneError):
        pass
    return False


def renamed(connection: driver.Connection, *, live: str, new: str, old_name: str) -> bool:
    """Whether the renames committed: the new name is gone, the old one exists."""
    rows = execute(
        connection,
        "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
        [[live, new, old_name]],
    )
    names = {row[0] for row in rows}
    return new not in names and {live, old_name} <= names


def _blockers(connection: driver.Connection, live: str) -> str:
    """Who holds a lock on the live database's catalog entry, for the error message."""
    with contextlib.suppress(driver.Error):
        rows = execute(
            connection,
            "SELECT a.pid, coalesce(nullif(a.application_name, ''), a.usename), "
            "left(a.query, 80) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'object' AND l.granted "
            "AND l.classid = 'pg_database'::regclass "
            "AND l.objid = (SELECT oid FROM pg_database WHERE datname = %s) "
            "AND a.pid <> pg_backend_pid()",
            [live],
        )
        if rows:
            held = "; ".join(f"pid {pid} ({who}: {query!r})" for pid, who, query in rows)
            return f" (a lock on it is held by {held})"
    return ""


def retire(
    connection: driver.Connection, name: str, to: str, *, job_id: Any, live: str
) -> str | None:
    """Rename ``name`` to ``to`` (a ``pgclone_old_…`` name, dropped later) and mark
    it the job's, ending the sessions on it first; returns ``to``, or None when
    ``name`` does not exist or had to be dropped at once (a client kept
    reconnecting to it)."""
    if not exists(connection, name):
        return None
    problem = ownership.check(connection, to, live, job_id)
    if problem:
        raise PgCloneError(f"Can't set {name!r} aside: {problem}.")
    drop(connection, to)
    _terminate_sessions(connection, (name,), keep=())
    connection.autocommit = False
    try:
        rename(connection, name, to)
        _set_comment(connection, to, ownership.mark_text(job_id, live))
        connection.commit()
    except errors.ObjectInUse:
        connection.rollback()
        connection.autocommit = True
        drop(connection, name)
        return None
    finally:
        if not connection.autocommit:
            connection.rollback()
            connection.autocommit = True
    return to


# After a crash: what the markers say ------------------------------------------------------


def marker(job_id: Any, live: str) -> str:
    return MARKER_PREFIX + json.dumps({"job": str(job_id), "live": live})


def reopen_abandoned(
    conn: postgres.ConnInfo,
    live_names: set[str],
    known_job: Callable[[str], bool | None] = lambda job: None,
    connection: driver.Connection | None = None,
) -> list[str]:
    """Re-open the databases that a swap closed and could not re-open.

    Only databases in ``live_names`` (the project's own, on this server) or
    named ``pgclone_old_…`` are touched, and only when a marker or that name
    says pgclone closed them and the job's sessions are gone (its worker died
    or gave up). A marker counts only on a database that is pgclone's
    (``pgclone.pg.ownership``) and names one of ``live_names``; ``known_job(id)``
    says whether the job table holds that job (None: it can't be read). Returns
    the names re-opened. Needs nothing but the server's catalog, so it works
    while the database holding the jobs is closed. ``connection``: one to the
    server's ``postgres`` database, if the caller has one open.
    """
    reopened = []
    with postgres.session(conn.with_name("postgres"), connection) as connection:
        closed = {
            row[0]
            for row in execute(
                connection,
                "SELECT datname FROM pg_catalog.pg_database "
                "WHERE NOT datallowconn AND NOT datistemplate",
            )
        }
        old = [name for name in closed if name.startswith(OLD_PREFIX)]
        found = ownership.look(connection, _marked_temps(connection) + old, sorted(live_names))
        candidates = []
        for name, database in found.items():
            job = ownership.sweepable(database, live_names, known_job)
            if job is None:
                continue  # another role's, another project's, or another environment's
            # A swap's marker names the live database it closed; an old name is its own.
            if name.startswith(TEMP_PREFIX) and database.mark is not None:
                candidates.append((job, database.mark.live))
            elif name.startswith(OLD_PREFIX):
                candidates.append((job, name))
        for job_id, name in candidates:
            if name in closed and not job_sessions(connection, job_id):
                allow_connections(connection, name, allowed=True)
                reopened.append(name)
    # The marker stays on the temporary database, which the job's cleanup drops.
    return reopened


def _marked_temps(connection: driver.Connection) -> list[str]:
    """Temporary databases that hold a swap's marker."""
    rows = execute(
        connection,
        "SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE %s "
        "AND pg_catalog.shobj_description(oid, 'pg_database') LIKE %s",
        [TEMP_PREFIX.replace("_", "\\_") + "%", MARKER_PREFIX.replace("_", "\\_") + "%"],
    )
    return [row[0] for row in rows]


def job_sessions(connection: driver.Connection, job_id: str) -> int:
    """Sessions of a job other than this one: its worker's application name is
    ``pgclone:`` and the job's id (of which a database name keeps 20 hex digits)."""
    return execute(
        connection,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
        "AND pid <> pg_backend_pid()",
        [f"{postgres.APPLICATION_NAME}:{id_prefix(job_id)}%"],
    )[0][0]


# Statements -----------------------------------------------------------------------------


def allow_connections(connection: driver.Connection, name: str, *, allowed: bool) -> None:
    execute(
        connection,
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.Literal(allowed)
        ),
    )


def _comment(connection: driver.Connection, name: str) -> str | None:
    rows = execute(
        connection,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        [name],
    )
    return rows[0][0] if rows else None


def _set_comment(connection: driver.Connection, name: str, comment: str | None) -> None:
    execute(
        connection,
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(comment) if comment is not None else sql.SQL("NULL")
        ),
    )


def _terminate_sessions(
    connection: driver.Connection, names: tuple[str, ...], keep: tuple[int, ...]
) -> None:
    """End every session on these databases but ours, and wait until they are gone.

    PostgreSQL's own waits (``pg_terminate_backend``'s timeout, the check in
    ``ALTER DATABASE … RENAME``) sleep in 100 ms steps; polling here keeps the
    swap window to what the sessions really take to exit.
    """
    others = (
        "FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid() "
        "AND NOT pid = ANY(%s)"
    )
    params = [list(names), list(keep) or [0]]
    try:
        execute(connection, "SELECT pg_terminate_backend(pid) " + others, params)
    except errors.InsufficientPrivilege as exc:
        raise PgCloneError(
            f"Can't end the other sessions on {names[0]!r}: {str(exc).strip()}. The role pgclone "
            "connects as must be allowed to (a superuser, or a member of pg_signal_backend for "
            "other roles' sessions). Nothing was swapped."
        ) from exc
    deadline = time.monotonic() + TERMINATE_TIMEOUT_MS / 1000
    while execute(connection, "SELECT count(*) " + others, params)[0][0]:
        if time.monotonic() > deadline:
            return  # the rename below retries, and reports who is still there
        time.sleep(0.001)
