"""Which accounts of a database could sign in to a Django admin, and how many.

Counted in two places, with one condition: by the dump step in its snapshot,
as the dump holds them (the manifest's ``accounts``), and by the admin in a
copy on the server (``:previous``, ``:current``, ``:NAME``). The admin refuses
to restore either into the database it runs on itself when none could: nobody
would be able to sign in again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist

from pgclone.exceptions import DatabaseUnavailable
from pgclone.pg import driver, postgres, search_path
from pgclone.pg.driver import sql

USABLE = "usable"  # how the manifest's condition names the password's part
LOCK_TIMEOUT = "2s"  # a dump's count waits no longer for a table someone locked


@dataclass(frozen=True)
class SignIn:
    """The rows of the user table that are accounts able to sign in to the admin
    with a password: each of ``flags`` true and a usable password (Django marks
    an unusable one with a leading "!", and an empty one matches no hasher)."""

    table: str  # Django's db_table
    flags: tuple[str, ...]  # the boolean columns that must be true: is_staff, is_active
    password: str = ""  # its column; "" when the user model has none
    schema: str = ""  # where the database has the table; "" when it has none

    @property
    def condition(self) -> list[str]:
        """The condition, as the manifest records it."""
        return [*self.flags, *([f"{self.password} {USABLE}"] if self.password else [])]

    @property
    def label(self) -> str:
        return postgres.display_name(self.schema, self.table) if self.schema else self.table

    def record(self, counted: Counted | None) -> dict[str, Any]:
        """The manifest's ``accounts``: ``count`` None when they could not be counted."""
        return {
            "table": self.label,
            "condition": self.condition,
            "count": None if counted is None else counted.can_sign_in,
            "unusable_password": None if counted is None else counted.unusable_password,
        }

    def statement(self, rows: sql.Composable) -> sql.Composable:
        """The count of ``rows`` (a table, or a SELECT in parentheses) that could
        sign in, and of those that could but for their password."""
        flags = sql.SQL(" AND ").join(map(sql.Identifier, self.flags))
        if not self.flags:
            flags = sql.SQL("true")
        usable = sql.SQL("true")
        if self.password:  # NULL is not usable either
            usable = sql.SQL("coalesce(left({}, 1), '') NOT IN ('', '!')").format(
                sql.Identifier(self.password)
            )
        return sql.SQL(
            "SELECT count(*) FILTER (WHERE {flags} AND {usable}), "
            "count(*) FILTER (WHERE {flags} AND NOT {usable}) FROM {rows} AS t"
        ).format(flags=flags, usable=usable, rows=rows)


@dataclass(frozen=True)
class Counted:
    """What counting found in a user table's rows."""

    can_sign_in: int
    unusable_password: int  # the accounts that could sign in but for their password


NONE = Counted(0, 0)


def user_model() -> SignIn | None:
    """The project's user model as a :class:`SignIn` (its columns that exist:
    a custom user model may have no ``is_staff``); None without one (no
    ``django.contrib.auth``, or AUTH_USER_MODEL not installed)."""
    try:
        model = apps.get_model(settings.AUTH_USER_MODEL)._meta.concrete_model
    except (LookupError, ValueError):
        return None

    def column(name: str) -> str:
        try:
            return model._meta.get_field(name).column or ""
        except FieldDoesNotExist:
            return ""

    flags = tuple(found for found in (column("is_staff"), column("is_active")) if found)
    return SignIn(model._meta.db_table, flags, column("password"))


def locate(cursor: driver.Cursor, users: SignIn, path: list[str]) -> SignIn:
    """``users`` with the schema of its table: the first of ``path`` that has it."""
    found = search_path.find(cursor, path, [users.table])
    schema = found[users.table][0] if users.table in found else ""
    return dataclasses.replace(users, schema=schema)


def count_rows(
    cursor: driver.Cursor, users: SignIn, select: sql.Composable | None = None
) -> Counted | None:
    """In the cursor's transaction (a dump's snapshot): the accounts among the
    rows of ``select`` (a SELECT giving the table's columns under their names;
    the table itself when None). None when they can't be counted (a right
    missing, a lock held too long): the transaction goes on."""
    if not users.schema:
        return NONE
    rows = (
        sql.SQL("({})").format(select)
        if select is not None
        else sql.Identifier(users.schema, users.table)
    )
    cursor.execute("SAVEPOINT pgclone_accounts")
    cursor.execute("SET LOCAL row_security = off")  # as pg_dump: a policy fails, never filters
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    try:
        cursor.execute(users.statement(rows))
        can, cannot = cursor.fetchone()
    except driver.Error:
        cursor.execute("ROLLBACK TO SAVEPOINT pgclone_accounts")
        return None
    cursor.execute("RELEASE SAVEPOINT pgclone_accounts")
    return Counted(int(can), int(cannot))


def count(conn: postgres.ConnInfo, users: SignIn) -> Counted:
    """The accounts of ``conn``'s database (its user table found where the
    project's sessions find it; none without one)."""
    path = search_path.project_path(conn)
    with postgres.connect(conn) as connection, connection.cursor() as cursor:
        found = locate(cursor, users, path)
        if not found.schema:
            return NONE
        try:
            cursor.execute(found.statement(sql.Identifier(found.schema, found.table)))
        except driver.Error as exc:
            raise DatabaseUnavailable(
                f"Could not count the accounts in database {conn.name!r}: {str(exc).strip()}"
            ) from exc
        can, cannot = cursor.fetchone()
        return Counted(int(can), int(cannot))
