"""Everything that talks to PostgreSQL.

The argv builders at the top are pure functions (unit tested); the functions
below them are the only places that run pg_dump / pg_restore / SQL. Passwords
go to the child's environment (PGPASSWORD), never to argv; database names go
in a quoted conninfo string so that a name holding '=' or spaces is never
parsed as connection options.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings

from pgclone.exceptions import ConfigurationError, DatabaseUnavailable, InvalidInput
from pgclone.pg import driver, programs

POSTGRES_ENGINES = (
    "django.db.backends.postgresql",
    "django.db.backends.postgresql_psycopg2",
    "django.contrib.gis.db.backends.postgis",
)
APPLICATION_NAME = "pgclone"
# libpq options that Django users put in OPTIONS and that the tools must share.
_PASSED_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout")
# An identifier SQL (and pg_dump's output) leaves unquoted.
_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")
# Every session pgclone opens (its driver's, pg_dump's, pg_restore's, psql's) has
# this search_path from its start, set in the startup packet: whoever can create
# objects in a database could otherwise put a function or an operator in a schema
# its search_path lists before pg_catalog (``public.set_config``,
# ``public.pg_export_snapshot()``, ``public.=``) that runs with the rights of
# pgclone's role at its first unqualified call, and SET or set_config, run once
# connected, would themselves be such a call (pgclone.pg.search_path finds the
# project's tables by name without it).
PINNED_SEARCH_PATH = "pg_catalog, pg_temp"


def session_options() -> str:
    """libpq's ``options`` of pgclone's sessions: the environment's PGOPTIONS, if
    any, then the pinned search_path (the last ``-c`` of a name wins)."""
    pin = "-c search_path=" + PINNED_SEARCH_PATH.replace(" ", "")
    return " ".join(part for part in (os.environ.get("PGOPTIONS", "").strip(), pin) if part)


@dataclass(frozen=True)
class ConnInfo:
    """How to reach one database, without the password in any printable form."""

    name: str
    host: str = ""
    port: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    options: tuple[tuple[str, str], ...] = ()
    application_name: str = APPLICATION_NAME
    # The project's own libpq ``options`` (Django's OPTIONS["options"], often a
    # search_path): pgclone's sessions never take them, only the look-up of the
    # search_path its project's sessions have (pgclone.pg.search_path).
    project_options: str = ""

    def with_name(self, name: str) -> ConnInfo:
        return replace(self, name=name)

    def for_job(self, job_id: Any) -> ConnInfo:
        """Sessions named after the job: visible in pg_stat_activity, and ended with it."""
        return replace(self, application_name=f"{APPLICATION_NAME}:{job_id}")

    def conninfo(self) -> str:
        """A libpq conninfo string (no password) naming this database."""
        pairs = [("dbname", self.name), ("application_name", self.application_name)]
        pairs += [(k, v) for k, v in (("host", self.host), ("port", self.port)) if v]
        pairs += [("user", self.user)] if self.user else []
        pairs += [*self.options, ("options", session_options())]
        return " ".join(f"{k}={quote_conninfo_value(v)}" for k, v in pairs)

    def env(self) -> dict[str, str]:
        """The environment of the programs that connect here (pg_dump, psql…)."""
        return programs.child_environment(self.password)

    def connect_kwargs(self, *, pinned: bool = True) -> dict[str, Any]:
        """The driver's keywords; ``pinned=False`` only for pgclone.pg.search_path's
        look-up, which runs SHOW alone."""
        kwargs: dict[str, Any] = {"dbname": self.name, "application_name": self.application_name}
        for key, value in (("host", self.host), ("port", self.port), ("user", self.user)):
            if value:
                kwargs[key] = value
        if self.password:
            kwargs["password"] = self.password
        kwargs.update(dict(self.options))
        if pinned:
            kwargs["options"] = session_options()
        elif self.project_options:
            kwargs["options"] = self.project_options
        return kwargs


def conn_info(alias: str = "default") -> ConnInfo:
    """Connection details of a Django database alias (must be PostgreSQL)."""
    databases = settings.DATABASES
    if alias not in databases:
        raise InvalidInput(
            f"Unknown database alias {alias!r}; settings.DATABASES has: {', '.join(databases)}."
        )
    config = databases[alias]
    if config.get("ENGINE") not in POSTGRES_ENGINES:
        raise ConfigurationError(
            f"Database {alias!r} uses {config.get('ENGINE')!r}; pgclone only copies PostgreSQL."
        )
    options = config.get("OPTIONS") or {}
    return ConnInfo(
        name=str(config.get("NAME") or ""),
        host=str(config.get("HOST") or ""),
        port=str(config.get("PORT") or ""),
        user=str(config.get("USER") or ""),
        password=str(config.get("PASSWORD") or ""),
        options=tuple((k, str(options[k])) for k in _PASSED_OPTIONS if k in options),
        project_options=str(options.get("options") or ""),
    )


def aliases_by_server() -> list[tuple[ConnInfo, list[str]]]:
    """Each PostgreSQL server the project's aliases name, once: the connection
    details of its first alias, and its aliases, in the order of settings.DATABASES."""
    found: dict[tuple[str, str], tuple[ConnInfo, list[str]]] = {}
    for alias, config in settings.DATABASES.items():
        if config.get("ENGINE") in POSTGRES_ENGINES:
            conn = conn_info(alias)
            found.setdefault((conn.host, conn.port), (conn, []))[1].append(alias)
    return list(found.values())


def quote_conninfo_value(value: str) -> str:
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def quote_pattern(name: str) -> str:
    """A pg_dump name pattern matching exactly ``name`` (no wildcards)."""
    return '"' + name.replace('"', '""') + '"'


def quote_qualified_pattern(schema: str, name: str) -> str:
    """A pg_dump name pattern matching exactly the table ``name`` of ``schema``
    (an unqualified pattern only matches tables on the search path)."""
    return f"{quote_pattern(schema)}.{quote_pattern(name)}"


def display_name(schema: str, name: str) -> str:
    """``schema.name`` for messages, each part double-quoted when SQL needs it."""
    return ".".join(
        part if _PLAIN_IDENTIFIER.match(part) else quote_pattern(part) for part in (schema, name)
    )


# How long a dump waits for a lock on a table (pg_dump's at its start, a planned
# dump's main session's): past it, the dump fails (TableLocked, or pg_dump's
# error) rather than wait without end, maybe for a session that waits for the dump.
LOCK_WAIT_SECONDS = 60


def pg_dump_argv(
    conn: ConnInfo,
    *,
    exclude_table_data: Iterable[tuple[str, str]] = (),
    snapshot: str = "",
    sections: list[str] = (),
    extra: list[str] = (),
    lock_wait_seconds: float | None = None,
) -> list[str]:
    """pg_dump writing an uncompressed custom-format archive to stdout.

    Compression happens outside pg_dump (zstd is several times faster than
    pg_dump's built-in gzip, and PostgreSQL 15's pg_dump has no zstd).
    ``exclude_table_data`` holds (schema, table) pairs (an unqualified pattern
    would be looked up on the pinned search_path, where no table of the project
    is: pgclone.pg.search_path qualifies Django's names).
    ``snapshot``: an exported snapshot to dump (see ``table_counts.Snapshot``).
    ``sections``: only these (pre-data, data, post-data); ``extra``: more options.
    ``lock_wait_seconds``: how long it waits for its locks (``LOCK_WAIT_SECONDS``).
    """
    wait = LOCK_WAIT_SECONDS if lock_wait_seconds is None else lock_wait_seconds
    argv = ["pg_dump", "--format=custom", "--compress=0", "--no-password",
            f"--lock-wait-timeout={round(wait * 1000)}", *extra]  # fmt: skip
    argv += [f"--section={section}" for section in sections]
    argv += [
        f"--exclude-table-data={quote_qualified_pattern(schema, table)}"
        for schema, table in exclude_table_data
    ]
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    return [*argv, f"--dbname={conn.conninfo()}"]


def pg_restore_argv(conn: ConnInfo, *, jobs: int = 1, path: str | None = None) -> list[str]:
    """pg_restore into ``conn``'s database, from ``path`` or else from stdin.

    Objects are owned by the restoring role and keep no grants from the
    source (``--no-owner --no-privileges``): roles differ between
    environments. The first error stops the restore (``--exit-on-error``).
    Parallel jobs need a file, never stdin.
    """
    argv = ["pg_restore", "--no-password", "--exit-on-error", "--no-owner", "--no-privileges"]
    if jobs > 1 and path:
        argv.append(f"--jobs={jobs}")
    argv.append(f"--dbname={conn.conninfo()}")
    return [*argv, path] if path else argv


# SQL ----------------------------------------------------------------------------


def open_connection(conn: ConnInfo) -> Any:
    """An autocommit connection (DDL such as CREATE DATABASE needs one)."""
    try:
        connection = driver.connect(**conn.connect_kwargs())
    except driver.OperationalError as exc:
        raise DatabaseUnavailable(
            f"Could not connect to database {conn.name!r}: {str(exc).strip()}"
        ) from exc
    connection.autocommit = True
    return connection


@contextlib.contextmanager
def connect(conn: ConnInfo) -> Iterator[Any]:
    """An autocommit connection, closed on leaving."""
    connection = open_connection(conn)
    try:
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def session(conn: ConnInfo, connection: Any = None) -> Iterator[Any]:
    """``connection``, one of pgclone's to ``conn``'s database that the caller
    keeps open (several catalog reads share it), or else a new one closed on
    leaving."""
    if connection is not None:
        yield connection
        return
    with connect(conn) as opened:
        yield opened


def end_sessions(conn: ConnInfo) -> None:
    """End the server sessions opened under ``conn``'s application name.

    A killed pg_dump leaves its session behind while that session waits for
    a lock; this ends it rather than letting it wait on.
    """
    ours = replace(conn, application_name=APPLICATION_NAME)
    with connect(ours) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            [conn.application_name],
        )


def server_version(conn: ConnInfo, connection: Any = None) -> str:
    with session(conn, connection) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def table_bytes(conn: ConnInfo, connection: Any = None) -> int:
    """About how much table data (heap and TOAST, no indexes) pg_dump will read.

    Exact sizes need a lock on every table; when one is locked, the planner's
    page counts are estimate enough for a progress display.
    """
    tables = (
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'm', 'p') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    )
    exact = "SELECT coalesce(sum(pg_table_size(c.oid)), 0) " + tables
    estimate = (
        "SELECT coalesce(sum(c.relpages + coalesce(t.relpages, 0)), 0)::bigint "
        "* current_setting('block_size')::bigint "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_class t ON t.oid = c.reltoastrelid "
        "WHERE c.relkind IN ('r', 'm', 'p') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    )
    with session(conn, connection) as connection, connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
        try:
            cursor.execute(exact)
        except driver.errors.LockNotAvailable:
            cursor.execute(estimate)
        found = int(cursor.fetchone()[0])
        cursor.execute("RESET lock_timeout")  # the session may serve others
        return found


def tables_referencing(
    conn: ConnInfo, tables: Iterable[tuple[str, str]], connection: Any = None
) -> list[tuple[str, str]]:
    """(schema, table) of every table whose rows must be left out with ``tables``'.

    That is every table with a foreign key to one of ``tables`` (schema, table), or to
    a table found so on, by the database's own constraints: tables Django
    knows nothing about included. ``tables`` themselves are not returned. A
    foreign key marked NOT VALID is not followed: a restore re-creates it
    without checking the rows.
    """
    query = """
        WITH RECURSIVE given AS (
            SELECT c.oid AS relid
            FROM pg_catalog.pg_class c
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            JOIN unnest(%s::text[], %s::text[]) AS g(nspname, relname)
              ON g.nspname = n.nspname AND g.relname = c.relname
        ), referencing(relid) AS (
            SELECT relid FROM given WHERE relid IS NOT NULL
            UNION
            SELECT con.conrelid
            FROM pg_catalog.pg_constraint con
            JOIN referencing r ON con.confrelid = r.relid
            WHERE con.contype = 'f' AND con.convalidated
        )
        SELECT n.nspname, c.relname
        FROM referencing r
        JOIN pg_catalog.pg_class c ON c.oid = r.relid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE r.relid NOT IN (SELECT relid FROM given WHERE relid IS NOT NULL)
        ORDER BY n.nspname, c.relname
    """
    with session(conn, connection) as connection, connection.cursor() as cursor:
        tables = list(tables)
        cursor.execute(query, [[schema for schema, _ in tables], [name for _, name in tables]])
        return [(schema, name) for schema, name in cursor.fetchall()]
