"""How many accounts of a database on the server could sign in to a Django admin.

The admin asks before it restores a copy on the server (``:previous``,
``:current``, ``:NAME``) into the database it runs on itself: a copy with no
such account would leave nobody able to sign in again.
"""

from __future__ import annotations

from collections.abc import Sequence

from pgclone.exceptions import DatabaseUnavailable
from pgclone.pg import driver, postgres, search_path
from pgclone.pg.driver import sql


def count(conn: postgres.ConnInfo, table: str, flags: Sequence[str]) -> int:
    """Rows of ``table`` (found where the project's sessions find it) whose boolean
    columns ``flags`` are all true; 0 when the database has no such table."""
    path = search_path.project_path(conn)
    with postgres.connect(conn) as connection, connection.cursor() as cursor:
        found = search_path.find(cursor, path, [table])
        if table not in found:
            return 0
        schema, _ = found[table]
        condition = sql.SQL(" AND ").join(sql.Identifier(flag) for flag in flags)
        statement = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
            sql.Identifier(schema, table), condition if flags else sql.SQL("true")
        )
        try:
            cursor.execute(statement)
        except driver.Error as exc:
            raise DatabaseUnavailable(
                f"Could not count the accounts in database {conn.name!r}: {str(exc).strip()}"
            ) from exc
        return int(cursor.fetchone()[0])
