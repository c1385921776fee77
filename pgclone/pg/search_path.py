"""Finding the project's tables by the names Django gives them, from sessions
whose search_path is pinned.

pgclone's sessions search pg_catalog alone (``postgres.PINNED_SEARCH_PATH``),
so an unqualified ``pgclone_job`` or a model's ``db_table`` is found nowhere in
them. The schema of such a name is the one where the project's own sessions
find it: the first schema of *their* search_path (the role's and database's
settings, the environment's PGOPTIONS, Django's OPTIONS["options"]) that holds
it. That search_path is read by a session of its own that runs ``SHOW
search_path`` and nothing else: SHOW calls no function, so nothing planted on
that path runs. The names are then looked up in the catalog by a pinned
session.
"""

from __future__ import annotations

from collections.abc import Iterable

from pgclone.exceptions import DatabaseUnavailable
from pgclone.pg import driver, postgres

Qualified = tuple[str, str]


def project_setting(conn: postgres.ConnInfo) -> str:
    """``conn``'s database's search_path as the project's sessions have it."""
    try:
        connection = driver.connect(**conn.connect_kwargs(pinned=False))
    except driver.OperationalError as exc:
        raise DatabaseUnavailable(
            f"Could not connect to database {conn.name!r}: {str(exc).strip()}"
        ) from exc
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW search_path")
            return cursor.fetchone()[0]
    finally:
        connection.close()


def split(setting: str) -> list[str]:
    """The schema names of a search_path setting, as PostgreSQL reads them:
    comma-separated, double-quoted or else folded to lower case."""
    names, rest = [], setting.strip()
    while rest:
        if rest.startswith('"'):
            end = 1
            while True:
                end = rest.find('"', end)
                if end == -1:
                    raise ValueError(f"unterminated quoted name in search_path {setting!r}")
                if rest[end + 1 : end + 2] == '"':
                    end += 2
                    continue
                break
            names.append(rest[1:end].replace('""', '"'))
            rest = rest[end + 1 :].strip()
        else:
            name, _, _ = rest.partition(",")
            names.append(name.strip().lower())
            rest = rest[len(name) :]
        if rest.startswith(","):
            rest = rest[1:].strip()
        elif rest:
            raise ValueError(f"unexpected text in search_path {setting!r}: {rest!r}")
    return [name for name in names if name]


def schemas(cursor: driver.Cursor, setting: str) -> list[str]:
    """The schemas a session with search_path ``setting`` searches for a table,
    in order: ``$user`` made the current role's name, pg_catalog first unless
    placed, only schemas that exist and that the role may use (as PostgreSQL
    skips the others). Temporary tables are not the project's: pg_temp is left
    out."""
    cursor.execute("SELECT current_user")
    (user,) = cursor.fetchone()
    listed = [user if name == "$user" else name for name in split(setting)]
    listed = [name for name in listed if name != "pg_temp" and not name.startswith("pg_temp_")]
    if "pg_catalog" not in listed:
        listed.insert(0, "pg_catalog")
    cursor.execute(
        "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(%s) "
        "AND pg_catalog.has_schema_privilege(oid, 'USAGE')",
        [listed],
    )
    usable = {name for (name,) in cursor.fetchall()}
    ordered: list[str] = []
    for name in listed:
        if name in usable and name not in ordered:
            ordered.append(name)
    return ordered


def find(
    cursor: driver.Cursor, path: list[str], names: Iterable[str]
) -> dict[str, tuple[str, int]]:
    """Each of ``names`` that is a relation in a schema of ``path``: its schema
    (the first of ``path`` that has it) and its oid."""
    names = sorted(set(names))
    if not names:
        return {}
    cursor.execute(
        "SELECT c.relname, n.nspname, c.oid::bigint FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = ANY(%s) AND n.nspname = ANY(%s)",
        [names, path],
    )
    found: dict[str, tuple[str, int]] = {}
    for name, schema, oid in sorted(cursor.fetchall(), key=lambda row: path.index(row[1])):
        found.setdefault(name, (schema, oid))
    return found


def project_path(conn: postgres.ConnInfo, connection: driver.Connection | None = None) -> list[str]:
    """The schemas where the project's sessions on ``conn``'s database find
    tables; ``connection``: one of pgclone's to that database, if open already."""
    setting = project_setting(conn)
    with postgres.session(conn, connection) as connection, connection.cursor() as cursor:
        return schemas(cursor, setting)


def qualify(
    conn: postgres.ConnInfo,
    names: Iterable[str],
    path: list[str],
    connection: driver.Connection | None = None,
) -> dict[str, Qualified]:
    """(schema, table) of each of ``names`` (Django's ``db_table``) that exists in
    ``conn``'s database, found in the schemas of ``path`` (:func:`project_path`)."""
    with postgres.session(conn, connection) as connection, connection.cursor() as cursor:
        return {name: (schema, name) for name, (schema, _) in find(cursor, path, names).items()}
