"""pgclone's own tables: which database holds them, and in the databases a
restore makes, emptied in a copy, checked before the swap, and the job
history copied across inside it."""

from __future__ import annotations

from typing import Any

from django.db import connections, router

from pgclone.exceptions import DatabaseUnavailable
from pgclone.models import Job
from pgclone.pg import databases, driver, postgres, search_path
from pgclone.pg.databases import JOB_TABLES, Maintenance, execute
from pgclone.pg.driver import sql


def jobs_alias() -> str:
    """The database alias that holds pgclone's job tables."""
    return router.db_for_write(Job)


def holds_jobs(conn: postgres.ConnInfo) -> bool:
    """Whether ``conn``'s database is the one holding pgclone's job tables."""
    try:
        with databases.maintenance(conn) as server:
            return holds_jobs_on(server, conn.name)
    except DatabaseUnavailable:
        return False  # its server can't be reached: nothing of it can hold them


def holds_jobs_on(server: driver.Connection, name: str) -> bool:
    """Whether database ``name``, seen through a connection to its server, is the
    one holding pgclone's job tables: same server start time, same oid as the
    job tables' database (read on Django's connection to it, already open), so
    that ``localhost`` and ``127.0.0.1`` alike name the same server. A database
    that does not exist (yet) holds nothing."""
    identity = "SELECT pg_postmaster_start_time(), oid FROM pg_database WHERE datname = %s"
    with server.cursor() as cursor:
        cursor.execute(identity, [name])
        here = cursor.fetchone()
    with connections[jobs_alias()].cursor() as cursor:
        cursor.execute(identity.replace("%s", "current_database()"))
        jobs_database = cursor.fetchone()
    return here is not None and tuple(here) == tuple(jobs_database)


def clear_job_tables(conn: postgres.ConnInfo, database: str) -> None:
    """Empty pgclone's own tables in a copy: history belongs to the live database.
    ``conn``: the live database (the project's search_path is read there)."""
    path = search_path.project_path(conn)
    with postgres.connect(conn.with_name(database)) as connection:
        present = _present_tables(connection, path)
        if present:
            execute(
                connection,
                sql.SQL("TRUNCATE {}").format(
                    sql.SQL(", ").join(_name(*table) for table in present.values())
                ),
            )


def _present_tables(connection: driver.Connection, path: list[str]) -> dict[str, tuple[str, str]]:
    """(schema, table) of each job table ``connection``'s database has, found in
    the schemas of ``path`` (pgclone's sessions search pg_catalog alone)."""
    with connection.cursor() as cursor:
        found = search_path.find(cursor, path, JOB_TABLES)
    return {table: (found[table][0], table) for table in JOB_TABLES if table in found}


def _name(schema: str, table: str) -> sql.Composable:
    return sql.Identifier(schema, table)


def _columns(connection: driver.Connection, table: tuple[str, str]) -> list[str]:
    rows = execute(
        connection,
        "SELECT a.attname FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        list(table),
    )
    return [row[0] for row in rows]


class JobHistoryCopy:
    """Copies pgclone's job rows from the live database into its replacement.

    Connections (the step's, see :class:`Maintenance`) are opened and column
    lists read before the swap blocks connections, so that only the copy itself
    happens inside the window. Only columns both sides have are copied. Both
    connections are let go once the copy is done: the new database is renamed
    next, and the live one is dropped once replaced.
    """

    def __init__(self, pg: Maintenance, live: str, new: str, path: list[str]) -> None:
        self._release = lambda: (pg.close(live), pg.close(new))
        self.source, self.target = pg.on(live), pg.on(new)
        self.tables = (_present_tables(self.source, path), _present_tables(self.target, path))
        source_tables, target_tables = self.tables
        self.columns = {
            table: [
                c
                for c in _columns(self.source, source_tables[table])
                if c in set(_columns(self.target, target_tables[table]))
            ]
            for table in JOB_TABLES
        }
        self.sequences = [
            (table, column, sequence)
            for table in JOB_TABLES
            for column in self.columns[table]
            for (sequence,) in execute(
                self.target,
                "SELECT pg_catalog.pg_get_serial_sequence(%s, %s)",
                [sql_text(target_tables[table]), column],
            )
            if sequence
        ]

    def pids(self) -> tuple[int, int]:
        return driver.backend_pid(self.source), driver.backend_pid(self.target)

    def copy(self) -> None:
        # The target's job tables are empty (dumps carry no job rows, copies are
        # cleared), so DELETE costs nothing while TRUNCATE would rewrite files.
        # The rename's commit flushes this transaction's WAL, hence no sync here.
        source_tables, target_tables = self.tables
        execute(self.target, "SET synchronous_commit = off")
        for table in reversed(JOB_TABLES):
            execute(self.target, sql.SQL("DELETE FROM {}").format(_name(*target_tables[table])))
        for table in JOB_TABLES:
            column_list = sql.SQL(", ").join(map(sql.Identifier, self.columns[table]))
            driver.copy_table(
                self.source,
                self.target,
                sql.SQL("COPY {} ({}) TO STDOUT").format(_name(*source_tables[table]), column_list),
                sql.SQL("COPY {} ({}) FROM STDIN").format(
                    _name(*target_tables[table]), column_list
                ),
            )
        # Sequences came with the dump: move them past the copied ids.
        for table, column, sequence in self.sequences:
            execute(
                self.target,
                sql.SQL(
                    "SELECT pg_catalog.setval(%s, (SELECT coalesce(max({}), 0) + 1 FROM {}), false)"
                ).format(sql.Identifier(column), _name(*target_tables[table])),
                [sequence],
            )
        self.close()

    def close(self) -> None:
        self._release()


def sql_text(table: tuple[str, str]) -> str:
    """``schema.table`` as a regclass input reads it (both parts quoted)."""
    return postgres.quote_qualified_pattern(*table)


def missing_job_columns(live: Any, new: Any, path: list[str]) -> str:
    """Job tables or columns that ``live`` has and ``new`` lacks ("" when none);
    both looked up in the schemas of ``path`` (the project's search_path)."""
    live_tables, new_tables = _present_tables(live, path), _present_tables(new, path)
    if list(new_tables) != list(JOB_TABLES):
        return "no " + " / ".join(JOB_TABLES)
    missing = [
        f"{table}.{column}"
        for table in JOB_TABLES
        if table in live_tables
        for column in _columns(live, live_tables[table])
        if column not in set(_columns(new, new_tables[table]))
    ]
    return ", ".join(missing)
