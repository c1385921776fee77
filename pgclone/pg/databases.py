"""Whole databases on the server: temporary copies, local copies, the swap.

Only this module creates, renames or drops databases. Every identifier goes
through ``sql.Identifier``; every statement runs on a maintenance
connection to the server's ``postgres`` database, never on the database it
changes.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

from pgclone.exceptions import PgCloneError
from pgclone.pg import driver, postgres
from pgclone.pg.driver import errors, sql

MAX_IDENTIFIER_BYTES = 63
TEMP_PREFIX = "pgclone_tmp_"
OLD_PREFIX = "pgclone_old_"
KEPT_PREFIX = "pgclone_kept_"  # pgclone.pg.kept_copies: copied by restores of their dump only
COPY_SUFFIXES = {"previous": "__previous", "current": "__current"}
JOB_TABLES = ("pgclone_job", "pgclone_jobstep")


def copy_name(live: str, which: str) -> str:
    """The name of the ``:previous`` / ``:current`` copy of a live database.

    ``live__previous`` when that fits PostgreSQL's 63 bytes; otherwise the
    live name is shortened and a hash of it keeps the name unique.
    """
    suffix = COPY_SUFFIXES[which]
    name = live + suffix
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(live.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len(suffix) - len(digest) - 1
    short = live.encode()[:room].decode("utf-8", errors="ignore")
    return f"{short}_{digest}{suffix}"


def job_digits(job_id: Any) -> str:
    """The first 20 hex digits of a job id: what names made for a job carry."""
    return str(job_id).replace("-", "")[:20]


def id_prefix(digits: str) -> str:
    """How a job id written as text starts, given the 20 digits a name carries."""
    d = job_digits(digits)
    return f"{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}"


def temp_name(job_id: Any) -> str:
    return TEMP_PREFIX + job_digits(job_id)


def old_name(job_id: Any) -> str:
    """What the replaced live database is called between the swap and its removal."""
    return OLD_PREFIX + job_digits(job_id)


@contextlib.contextmanager
def maintenance(conn: postgres.ConnInfo) -> Iterator[Any]:
    """A connection to the server's ``postgres`` database, for DDL on others."""
    with postgres.connect(conn.with_name("postgres")) as connection:
        yield connection


class Maintenance:
    """The connections of one job step to one server, each opened when first
    needed and kept for the step: to the server's ``postgres`` database (DDL on
    the others) and to the databases the step must look into.

    ``close(name)`` lets a database go (nobody may be connected to a database
    that is renamed or dropped); leaving the ``with`` block closes the rest.
    """

    def __init__(self, conn: postgres.ConnInfo) -> None:
        self.conn = conn
        self._open: dict[str, Any] = {}

    def __enter__(self) -> Maintenance:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for name in list(self._open):
            self.close(name)

    @property
    def server(self) -> driver.Connection:
        return self.on("postgres")

    def on(self, name: str) -> driver.Connection:
        if name not in self._open:
            self._open[name] = postgres.open_connection(self.conn.with_name(name))
        return self._open[name]

    def close(self, name: str) -> None:
        connection = self._open.pop(name, None)
        if connection is not None:
            with contextlib.suppress(driver.Error):
                connection.close()


def execute(connection: driver.Connection, statement: Any, params: Any = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def exists(connection: driver.Connection, name: str) -> bool:
    return bool(execute(connection, "SELECT 1 FROM pg_database WHERE datname = %s", [name]))


def leftover_databases(connection: driver.Connection) -> list[str]:
    """Temporary and old databases pgclone made (``pgclone_tmp_<job>…``, ``pgclone_old_<job>``)."""
    rows = execute(
        connection,
        "SELECT datname FROM pg_database WHERE datname LIKE 'pgclone\\_tmp\\_%' "
        "OR datname LIKE 'pgclone\\_old\\_%' ORDER BY datname",
    )
    return [row[0] for row in rows]


def local_databases(conn: postgres.ConnInfo) -> list[str]:
    """Databases on the server that a restore can copy (not templates, not temporaries,
    not kept copies)."""
    with maintenance(conn) as connection:
        rows = execute(
            connection,
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' "
            "AND datname NOT LIKE %s AND datname NOT LIKE %s AND datname NOT LIKE %s "
            "ORDER BY datname",
            [prefix.replace("_", "\\_") + "%" for prefix in (TEMP_PREFIX, OLD_PREFIX, KEPT_PREFIX)],
        )
    return [row[0] for row in rows]


def sizes(conn: postgres.ConnInfo) -> dict[str, int | None]:
    """Each database's size in bytes, None for those this role may not connect to."""
    with maintenance(conn) as connection:
        rows = execute(
            connection,
            "SELECT datname, CASE WHEN has_database_privilege(datname, 'CONNECT') "
            "THEN pg_database_size(datname) END FROM pg_database WHERE NOT datistemplate",
        )
    return {name: size for name, size in rows}


def columns(connection: driver.Connection, table: str) -> list[str]:
    rows = execute(
        connection,
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        [table],
    )
    return [row[0] for row in rows]


def drop(connection: driver.Connection, name: str) -> None:
    execute(
        connection, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


def create_empty(
    connection: driver.Connection, name: str, like: str | None, template: str | None = None
) -> None:
    """An empty database, with the encoding and locale (provider included) of
    ``like`` when it exists; or a copy of ``template`` (which has them: the
    caller checked), an administrator's database marked IS_TEMPLATE."""
    if template:
        _copy(
            connection, name, template, sql.SQL(""),
            f"Can't copy the template database {template!r}: other sessions are connected "
            "to it. Close them (REVOKE CONNECT ON it FROM PUBLIC keeps them away) and try "
            "again.",
        )  # fmt: skip
        return
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if like and exists(connection, like):
        catalog = set(columns(connection, "pg_catalog.pg_database"))
        # PostgreSQL 15 added locale providers; 17 renamed daticulocale to datlocale.
        provider = "datlocprovider" if "datlocprovider" in catalog else "'c'"
        locale = next((c for c in ("datlocale", "daticulocale") if c in catalog), "NULL")
        encoding, collate, ctype, provider, locale = execute(
            connection,
            f"SELECT pg_encoding_to_char(encoding), datcollate, datctype, {provider}, {locale} "  # noqa: S608 - column names from the catalog
            "FROM pg_database WHERE datname = %s",
            [like],
        )[0]
        statement += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)
        )
        if provider == "i":
            statement += sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(locale))
        elif provider == "b":
            statement += sql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(
                sql.Literal(locale)
            )
    execute(connection, statement)


def create_copy(connection: driver.Connection, name: str, source: str) -> None:
    """A file-level copy of ``source`` (much faster than dump and restore).

    PostgreSQL refuses while anyone is connected to ``source``; that error is
    turned into one that says what to do.
    """
    _copy(
        connection, name, source, sql.SQL(" STRATEGY FILE_COPY"),
        f"Can't copy database {source!r}: other sessions are connected to it. "
        "Close them (stop the processes using it) and try again.",
    )  # fmt: skip


def _copy(
    connection: driver.Connection, name: str, source: str, strategy: sql.Composable, busy: str
) -> None:
    """CREATE DATABASE ``name`` TEMPLATE ``source``; PgCloneError(``busy``) while
    anyone is connected to ``source`` (PostgreSQL refuses then)."""
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
        sql.Identifier(name), sql.Identifier(source), strategy
    )
    try:
        execute(connection, statement)
    except errors.ObjectInUse as exc:
        raise PgCloneError(busy) from exc


def carry_over(connection: driver.Connection, live: str, new: str) -> list[str]:
    """Give ``new`` what belongs to the database object ``live`` rather than to its data:
    owner, connection limit, grants and per-database settings. Returns what was done."""
    if not exists(connection, live):
        return []
    owner, limit, acl = execute(
        connection,
        "SELECT pg_get_userbyid(datdba), datconnlimit, datacl IS NOT NULL "
        "FROM pg_database WHERE datname = %s",
        [live],
    )[0]
    new_id = sql.Identifier(new)
    done = []
    with contextlib.suppress(errors.InsufficientPrivilege):
        execute(
            connection,
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(new_id, sql.Identifier(owner)),
        )
        done.append(f"owner {owner}")
    if limit != -1:
        execute(
            connection,
            sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(new_id, sql.Literal(limit)),
        )
    if acl:
        _carry_grants(connection, live, new_id)
        done.append("grants")
    return done + _carry_settings(connection, live, new_id)


def _carry_grants(connection: driver.Connection, live: str, new_id: sql.Identifier) -> None:
    execute(connection, sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(new_id))
    grants = execute(
        connection,
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
        "a.privilege_type, a.is_grantable FROM pg_database d, aclexplode(d.datacl) a "
        "WHERE d.datname = %s AND a.grantee <> d.datdba",
        [live],
    )
    for grantee, privilege, grantable in grants:
        execute(
            connection,
            sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege),
                new_id,
                sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""),
            ),
        )


def _carry_settings(connection: driver.Connection, live: str, new_id: sql.Identifier) -> list[str]:
    """The per-database settings of ``live`` (the database's and each role's in it)."""
    done = []
    settings = execute(
        connection,
        "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, "
        "unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = %s",
        [live],
    )
    for role, setting in settings:
        name, _, value = setting.partition("=")
        target = (
            sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), new_id)
            if role
            else sql.SQL("ALTER DATABASE {}").format(new_id)
        )
        statement = target + sql.SQL(" SET {} = {}").format(
            sql.Identifier(name), setting_value(name, value)
        )
        if not role:
            execute(connection, statement)
            continue
        # Another role's setting needs rights over that role: skip it rather than
        # fail the restore, and say so.
        try:
            execute(connection, statement)
        except errors.InsufficientPrivilege:
            done.append(f"not {name} for role {role} (no right to set it)")
    if settings:
        done.append(f"{len(settings)} setting(s)")
    return done


# Settings that hold a list: stored as "a, \"B\"", each element must be set apart.
LIST_SETTINGS = {
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
    "shared_preload_libraries",
}


def setting_value(name: str, value: str) -> sql.Composable:
    """A stored per-database setting as SQL that sets the same value again."""
    if name.lower() not in LIST_SETTINGS:
        return sql.Literal(value)
    return sql.SQL(", ").join(sql.Literal(item) for item in split_list_setting(value))


def split_list_setting(value: str) -> list[str]:
    """Split ``a, "B c", "d""e"`` into ``['a', 'B c', 'd"e']`` as PostgreSQL stores lists."""
    items, current, quoted, index = [], "", False, 0
    while index < len(value):
        char = value[index]
        if char == '"' and quoted and value[index + 1 : index + 2] == '"':
            current += '"'
            index += 1
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(current)
            current = ""
        elif char.isspace() and not quoted:
            pass  # only quoted names hold spaces
        else:
            current += char
        index += 1
    items.append(current)
    return [item for item in items if item]


def rename(connection: driver.Connection, name: str, to: str) -> None:
    execute(
        connection,
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(to)),
    )
