"""pgclone's own tables in the databases a restore makes: emptied in a copy,
checked before the swap, and the job history copied across inside it."""

from __future__ import annotations

from typing import Any

from pgclone import driver, postgres
from pgclone.databases import JOB_TABLES, Maintenance, columns, execute
from pgclone.driver import sql


def clear_job_tables(conn: postgres.ConnInfo, database: str) -> None:
    """Empty pgclone's own tables in a copy: history belongs to the live database."""
    with postgres.connect(conn.with_name(database)) as connection:
        present = _present_tables(connection, JOB_TABLES)
        if present:
            execute(
                connection,
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, present))),
            )


def _present_tables(connection: Any, tables: tuple[str, ...]) -> list[str]:
    rows = execute(
        connection,
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname = ANY(%s) "
        "AND pg_table_is_visible(oid)",
        [list(tables)],
    )
    found = {row[0] for row in rows}
    return [table for table in tables if table in found]


class JobHistoryCopy:
    """Copies pgclone's job rows from the live database into its replacement.

    Connections (the step's, see :class:`Maintenance`) are opened and column
    lists read before the swap blocks connections, so that only the copy itself
    happens inside the window. Only columns both sides have are copied. Both
    connections are let go once the copy is done: the new database is renamed
    next, and the live one is dropped once replaced.
    """

    def __init__(self, pg: Maintenance, live: str, new: str) -> None:
        self._release = lambda: (pg.close(live), pg.close(new))
        self.source, self.target = pg.on(live), pg.on(new)
        self.columns = {
            table: [c for c in columns(self.source, table) if c in set(columns(self.target, table))]
            for table in JOB_TABLES
        }
        self.sequences = [
            (table, column, sequence)
            for table in JOB_TABLES
            for column in self.columns[table]
            for (sequence,) in execute(
                self.target, "SELECT pg_get_serial_sequence(%s, %s)", [table, column]
            )
            if sequence
        ]

    def pids(self) -> tuple[int, int]:
        return driver.backend_pid(self.source), driver.backend_pid(self.target)

    def copy(self) -> None:
        # The target's job tables are empty (dumps carry no job rows, copies are
        # cleared), so DELETE costs nothing while TRUNCATE would rewrite files.
        # The rename's commit flushes this transaction's WAL, hence no sync here.
        execute(self.target, "SET synchronous_commit = off")
        for table in reversed(JOB_TABLES):
            execute(self.target, sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        for table in JOB_TABLES:
            column_list = sql.SQL(", ").join(map(sql.Identifier, self.columns[table]))
            driver.copy_table(
                self.source,
                self.target,
                sql.SQL("COPY {} ({}) TO STDOUT").format(sql.Identifier(table), column_list),
                sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), column_list),
            )
        # Sequences came with the dump: move them past the copied ids.
        for table, column, sequence in self.sequences:
            execute(
                self.target,
                sql.SQL(
                    "SELECT setval(%s, (SELECT coalesce(max({}), 0) + 1 FROM {}), false)"
                ).format(sql.Identifier(column), sql.Identifier(table)),
                [sequence],
            )
        self.close()

    def close(self) -> None:
        self._release()


def missing_job_columns(live: Any, new: Any) -> str:
    """Job tables or columns that ``live`` has and ``new`` lacks ("" when none)."""
    if _present_tables(new, JOB_TABLES) != list(JOB_TABLES):
        return "no " + " / ".join(JOB_TABLES)
    missing = [
        f"{table}.{column}"
        for table in JOB_TABLES
        for column in columns(live, table)
        if column not in set(columns(new, table))
    ]
    return ", ".join(missing)
