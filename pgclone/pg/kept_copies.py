"""Kept copies: databases that hold what a dump restored to, copied again in template time.

A kept copy is named ``pgclone_kept_<digest>`` (the digest is over the dump's
key and its storage location, so the name fits PostgreSQL's 63 bytes and
says nothing), owned by the role pgclone connects as, not a template (any
role with CREATEDB may copy a template), closed to connections and to
PUBLIC. Its comment is pgclone's kept mark: the dump's key and location,
the job that made it and when. Only its owner (or a superuser) may copy a
database that is not a template, which is what pgclone does.

While its job runs, the copy waits as ``pgclone_tmp_<job>_kept`` under the
job's own mark, so the job's cleanup and the sweep drop it as they drop the
job's temporary database; it is renamed and given the kept mark only once
the job succeeded.

A name proves nothing (any role with CREATEDB may make a database of that
name): a database is used, replaced or dropped as a kept copy only when it
is owned by the role pgclone connects as, is not a template, and bears a
kept mark naming the same dump.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from pgclone.pg import databases, driver, postgres
from pgclone.pg.databases import execute
from pgclone.pg.driver import sql

logger = logging.getLogger("pgclone")

PREFIX = databases.KEPT_PREFIX
PENDING_SUFFIX = "_kept"
MARK_PREFIX = "pgclone kept: "
DIGEST_HEX = 40  # 13 + 40 = 53 bytes, within PostgreSQL's 63
LOCK_CLASS = 0x7067636C  # "pgcl": the first key of pgclone's advisory locks


def kept_name(location: str, key: str) -> str:
    """The name of the kept copy of dump ``key`` stored at ``location``."""
    digest = hashlib.sha256(f"{location}\n{key}".encode()).hexdigest()
    return PREFIX + digest[:DIGEST_HEX]


def pending_name(job_id: object) -> str:
    """Where a job's copy waits until the job has succeeded."""
    return databases.temp_name(job_id) + PENDING_SUFFIX


@dataclass(frozen=True)
class KeptMark:
    key: str
    location: str
    job: str
    made: str  # ISO time the job confirmed it
    template: str = ""  # the PGCLONE_TEMPLATE_DATABASE it was restored over, if any

    def text(self) -> str:
        return MARK_PREFIX + json.dumps(asdict(self), sort_keys=True)


def read_mark(comment: str | None) -> KeptMark | None:
    if not comment or not comment.startswith(MARK_PREFIX):
        return None
    try:
        data = json.loads(comment[len(MARK_PREFIX) :])
        return KeptMark(**{name: str(data[name]) for name in ("key", "location", "job", "made")},
                        template=str(data.get("template") or ""))  # fmt: skip
    except (ValueError, TypeError, KeyError, RecursionError):
        return None


@dataclass(frozen=True)
class Found:
    """What the catalog says of a database named as a kept copy."""

    name: str
    owner: str
    ours: bool  # owned by the role pgclone connects as
    template: bool
    allows_connections: bool
    comment: str | None
    size: int

    @property
    def mark(self) -> KeptMark | None:
        return read_mark(self.comment)


_LOOK = (
    "SELECT d.datname, pg_catalog.pg_get_userbyid(d.datdba), "
    "d.datdba = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), "
    "d.datistemplate, d.datallowconn, pg_catalog.shobj_description(d.oid, 'pg_database'), "
    "CASE WHEN pg_catalog.has_database_privilege(d.oid, 'CONNECT') "
    "THEN pg_catalog.pg_database_size(d.oid) ELSE 0 END "
    "FROM pg_catalog.pg_database d "
)


def look(connection: driver.Connection, name: str) -> Found | None:
    rows = execute(connection, _LOOK + "WHERE d.datname = %s", [name])
    return Found(*rows[0]) if rows else None


def all_kept(connection: driver.Connection) -> list[Found]:
    """Every database named as a kept copy on the server, pgclone's or not."""
    rows = execute(
        connection,
        _LOOK + "WHERE d.datname LIKE %s ORDER BY d.datname",
        [PREFIX.replace("_", "\\_") + "%"],
    )
    return [Found(*row) for row in rows]


def refusal(found: Found, key: str | None = None, location: str | None = None) -> str | None:
    """Why ``found`` is not pgclone's kept copy (of ``key`` at ``location`` when
    given); None when it is."""
    if not found.ours:
        return f"it is owned by {found.owner}, not by the role pgclone connects as"
    if found.template:
        return "it is a template database"
    mark = found.mark
    if mark is None:
        return "it does not bear pgclone's kept mark"
    if key is not None and (mark.key, mark.location) != (key, location):
        return f"it is the kept copy of another dump ({mark.key})"
    return None


def keep(connection: driver.Connection, name: str, source: str, mark: str) -> None:
    """Copy ``source`` to ``name`` (FILE_COPY: PostgreSQL checkpoints first, so
    the files copied hold everything written), closed to everyone but its
    owner, and marked with ``mark``."""
    databases.create_copy(connection, name, source)
    ident = sql.Identifier(name)
    execute(connection, sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident))
    execute(connection, sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
    comment(connection, name, mark)


def comment(connection: driver.Connection, name: str, text: str) -> None:
    execute(
        connection,
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(text)),
    )


@contextlib.contextmanager
def pending_lock(connection: driver.Connection, pending: str) -> Iterator[bool]:
    """Whether this session holds, for the block, the lock on the pending copy
    ``pending``: whoever keeps one takes it (the worker whose job succeeded, or
    the sweep), and the sweep drops one only while it holds it, so that it
    never drops what is being renamed. A session-level advisory lock in the
    server's ``postgres`` database, which ends with the session (a worker
    killed while holding it holds nothing). Any role that may connect there
    may take it too: that can delay a drop, never stop a copy being kept."""
    key = [LOCK_CLASS, pending]
    held = execute(connection, "SELECT pg_try_advisory_lock(%s, hashtext(%s))", key)[0][0]
    try:
        yield bool(held)
    finally:
        if held:
            execute(connection, "SELECT pg_advisory_unlock(%s, hashtext(%s))", key)


def confirm(connection: driver.Connection, pending: str, name: str, mark: KeptMark) -> None:
    """Give ``pending`` the kept mark and its kept name, both or neither."""
    rename_commented(connection, pending, name, mark.text())


def rename_commented(connection: driver.Connection, name: str, to: str, text: str | None) -> None:
    """Rename ``name`` to ``to`` and set its comment (None: none), in one transaction."""
    connection.autocommit = False
    try:
        execute(
            connection,
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(text)),
        )
        databases.rename(connection, name, to)
        connection.commit()  # type: ignore[attr-defined]
    except BaseException:
        with contextlib.suppress(driver.Error):
            connection.rollback()  # type: ignore[attr-defined]
        raise
    finally:
        connection.autocommit = True


def locale_of(connection: driver.Connection, name: str) -> tuple | None:
    """Encoding, collation, ctype, locale provider and locale of ``name`` (None if absent):
    a copy keeps its template's, so a kept copy serves only databases with the same."""
    catalog = set(databases.columns(connection, "pg_catalog.pg_database"))
    # PostgreSQL 15 added locale providers; 17 renamed daticulocale to datlocale.
    provider = "datlocprovider" if "datlocprovider" in catalog else "'c'"
    locale = next((c for c in ("datlocale", "daticulocale") if c in catalog), "NULL")
    rows = execute(
        connection,
        f"SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype, {provider}, "  # noqa: S608 - column names from the catalog
        f"{locale} FROM pg_catalog.pg_database WHERE datname = %s",
        [name],
    )
    return tuple(rows[0]) if rows else None


def copy_method(connection: driver.Connection) -> tuple[int, str | None]:
    """The server's version number and its ``file_copy_method`` (PostgreSQL 18+; None before)."""
    version, method = execute(
        connection,
        "SELECT pg_catalog.current_setting('server_version_num')::int, "
        "pg_catalog.current_setting('file_copy_method', true)",
    )[0]
    return version, method


def clone_note(server_version_num: int, file_copy_method: str | None) -> str:
    """What a copy's message adds about how PostgreSQL copied the files: on 18+
    with ``file_copy_method = clone`` the files were cloned (reflinks on a
    copy-on-write filesystem), else nothing."""
    if server_version_num >= 180000 and (file_copy_method or "").strip().lower() == "clone":
        return " (cloned: file_copy_method = clone)"
    return ""


# On every server of the project ----------------------------------------------------


def on_servers(
    conns: list[postgres.ConnInfo], act: Callable[[driver.Connection], list[str]]
) -> list[str]:
    """``act`` on each of those servers; one that can't be reached is logged, not fatal."""
    done = []
    for conn in conns:
        try:
            with databases.maintenance(conn) as connection:
                done += act(connection)
        except Exception as exc:
            logger.warning("pgclone: could not look at kept copies on %s: %s", conn.host, exc)
    return done


def servers() -> list[postgres.ConnInfo]:
    """One connection of each PostgreSQL server the project's aliases name."""
    return [conn for conn, _ in postgres.aliases_by_server()]


def drop_copies_of(location: str, deleted: list[str]) -> list[str]:
    """A kept copy goes with its dump: drop pgclone's copies of the ``deleted`` keys."""
    doomed = {kept_name(location, key) for key in deleted}

    def act(connection: driver.Connection) -> list[str]:
        dropped = []
        for found in all_kept(connection):
            if found.name in doomed and not refusal(found):
                databases.drop(connection, found.name)
                dropped.append(found.name)
        return dropped

    return on_servers(servers(), act) if doomed else []
