"""Everything that talks to PostgreSQL.

The argv builders at the top are pure functions (unit tested); the functions
below them are the only places that run pg_dump / pg_restore / SQL. Passwords
go to the child's environment (PGPASSWORD), never to argv; database names go
in a quoted conninfo string so that a name holding '=' or spaces is never
parsed as connection options.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings

from pgclone.exceptions import CommandFailed, ConfigurationError, DatabaseUnavailable, InvalidInput
from pgclone.pg import driver

POSTGRES_ENGINES = (
    "django.db.backends.postgresql",
    "django.db.backends.postgresql_psycopg2",
    "django.contrib.gis.db.backends.postgis",
)
STDERR_TAIL_BYTES = 4000
STDERR_HEAD_BYTES = 2000  # kept too: pg_dump 16+ prints a whole batched LOCK after its error
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
# libpq's environment variables, which the programs pgclone runs may need (none
# of them a secret of pgclone's: the password comes from the ConnInfo). A child
# gets these and the locale, PATH, HOME, TMPDIR and TZ, nothing else: no
# PGCLONE_AGE_IDENTITY, no cloud credentials, no project secrets.
LIBPQ_ENVIRONMENT = (
    "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSFILE", "PGSERVICE",
    "PGSERVICEFILE", "PGCHANNELBINDING", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE", "PGREQUIRESSL",
    "PGSSLCOMPRESSION", "PGSSLCERT", "PGSSLKEY", "PGSSLCERTMODE", "PGSSLROOTCERT", "PGSSLCRL",
    "PGSSLCRLDIR", "PGSSLSNI", "PGREQUIREPEER", "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE", "PGKRBSRVNAME", "PGGSSLIB", "PGGSSDELEGATION",
    "PGCONNECT_TIMEOUT", "PGCLIENTENCODING", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS",
    "PGREQUIREAUTH", "PGDATESTYLE", "PGTZ", "PGGEQO", "PGSYSCONFDIR", "PGLOCALEDIR",
)  # fmt: skip
_CHILD_ENVIRONMENT = ("PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ", *LIBPQ_ENVIRONMENT)


def session_options() -> str:
    """libpq's ``options`` of pgclone's sessions: the environment's PGOPTIONS, if
    any, then the pinned search_path (the last ``-c`` of a name wins)."""
    pin = "-c search_path=" + PINNED_SEARCH_PATH.replace(" ", "")
    return " ".join(part for part in (os.environ.get("PGOPTIONS", "").strip(), pin) if part)


def child_environment(password: str = "") -> dict[str, str]:
    """The environment of a program pgclone runs: what it needs of this
    process's (``_CHILD_ENVIRONMENT`` and the LC_* variables) and the password."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in _CHILD_ENVIRONMENT or name.startswith("LC_")
    }
    if password:
        env["PGPASSWORD"] = password
    return env


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
        return child_environment(self.password)

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
) -> list[str]:
    """pg_dump writing an uncompressed custom-format archive to stdout.

    Compression happens outside pg_dump (zstd is several times faster than
    pg_dump's built-in gzip, and PostgreSQL 15's pg_dump has no zstd).
    ``exclude_table_data`` holds (schema, table) pairs (an unqualified pattern
    would be looked up on the pinned search_path, where no table of the project
    is: pgclone.pg.search_path qualifies Django's names).
    ``snapshot``: an exported snapshot to dump (see ``table_counts.Snapshot``).
    ``sections``: only these (pre-data, data, post-data); ``extra``: more options.
    """
    argv = ["pg_dump", "--format=custom", "--compress=0", "--no-password",
            f"--lock-wait-timeout={LOCK_WAIT_SECONDS * 1000}", *extra]  # fmt: skip
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


def tool_version(program: str) -> str:
    return run([program, "--version"], env=child_environment()).strip()


# Running programs -----------------------------------------------------------


class _StderrTail:
    """Drains a child's stderr in a thread, keeping its first and last bytes."""

    def __init__(self, stream: Any) -> None:
        self._head = b""
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0  # of the chunks kept
        self._after_head = 0  # bytes seen after the head: more than the tail, a gap
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: Any) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            if len(self._head) < STDERR_HEAD_BYTES:
                room = STDERR_HEAD_BYTES - len(self._head)
                self._head, chunk = self._head + chunk[:room], chunk[room:]
                if not chunk:
                    continue
            self._chunks.append(chunk)
            self._size += len(chunk)
            self._after_head += len(chunk)
            while self._size - len(self._chunks[0]) >= STDERR_TAIL_BYTES:
                self._size -= len(self._chunks.popleft())
        stream.close()

    def text(self) -> str:
        self._thread.join(timeout=5)
        tail = b"".join(self._chunks)[-STDERR_TAIL_BYTES:]
        gap = b"\n[...]\n" if self._after_head > len(tail) else b""
        return (self._head + gap + tail).decode("utf-8", errors="replace")


_threads = threading.local()
_SETPRIV = shutil.which("setpriv")


def _dies_with_us(argv: list[str]) -> list[str]:
    """Have the kernel kill the program if this process dies (a worker killed
    mid-job), so that no pg_dump or pg_restore goes on as an orphan. Uses
    util-linux's setpriv where there is one (every Linux distribution)."""
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


def current_children() -> set[subprocess.Popen]:
    """The programs this thread is running now; another thread may kill them (cancel)."""
    if not hasattr(_threads, "children"):
        _threads.children = set()
    return _threads.children


def adopt_children(children: set[subprocess.Popen]) -> None:
    """Make this thread's programs part of another thread's ``children`` (a step's
    helper thread: cancelling the step kills them too)."""
    _threads.children = children


def require_program(program: str, env: dict[str, str] | None = None) -> None:
    """Raise ConfigurationError unless ``program`` is on the PATH of ``env``
    (this process's environment when None)."""
    path = (os.environ if env is None else env).get("PATH")
    if shutil.which(program, path=path) is None:
        raise ConfigurationError(
            f"{program} was not found on PATH: install the PostgreSQL client tools "
            "(same major version as the server or newer) on every worker."
        )


@contextlib.contextmanager
def spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    stdin: Any = None,
    stdout: Any = subprocess.PIPE,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[subprocess.Popen]:
    """Run ``argv``; on leaving, wait for it and raise CommandFailed if it failed.
    ``pass_fds``: descriptors the program inherits (a list it reads as /dev/fd/N).

    If the block raises, the child is killed first so that nothing keeps
    running behind a failed step.
    """
    require_program(argv[0], env)
    proc = subprocess.Popen(
        _dies_with_us(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        pass_fds=pass_fds,
    )
    stderr = _StderrTail(proc.stderr)
    proc.pgclone_failure = lambda code: CommandFailed(argv, code, stderr.text())
    children = current_children()
    children.add(proc)
    try:
        yield proc
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        children.discard(proc)
        if proc.stdout:
            proc.stdout.close()
    ended(proc)


def ended(proc: subprocess.Popen) -> None:
    """Wait for a program :func:`spawn` started, its output read to the end;
    CommandFailed if it failed. Leaving ``spawn`` does this; a caller that must
    know sooner (the others it runs beside should stop) calls it first."""
    returncode = proc.wait()
    if returncode != 0:
        raise proc.pgclone_failure(returncode)


def run(
    argv: list[str], *, env: dict[str, str], stdin: Any = None, pass_fds: tuple[int, ...] = ()
) -> str:
    """Run a program to completion and return its stdout."""
    with spawn(argv, env=env, stdin=stdin, pass_fds=pass_fds) as proc:
        output = proc.stdout.read()
    return output.decode("utf-8", errors="replace")


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


def server_version(conn: ConnInfo) -> str:
    with connect(conn) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def table_bytes(conn: ConnInfo) -> int:
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
    with connect(conn) as connection, connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
        try:
            cursor.execute(exact)
        except driver.errors.LockNotAvailable:
            cursor.execute(estimate)
        return int(cursor.fetchone()[0])


def tables_referencing(conn: ConnInfo, tables: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
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
    with connect(conn) as connection, connection.cursor() as cursor:
        tables = list(tables)
        cursor.execute(query, [[schema for schema, _ in tables], [name for _, name in tables]])
        return [(schema, name) for schema, name in cursor.fetchall()]
