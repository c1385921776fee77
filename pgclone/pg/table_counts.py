"""What a dump holds, table by table, and whether a restore got all of it.

The dump step opens a :class:`Snapshot` and hands its id to ``pg_dump
--snapshot``: the tables listed and the rows counted in that transaction are
exactly the ones the archive holds. Tables smaller than ``EXACT_BELOW`` are
counted exactly; bigger ones are estimated from the planner's statistics
(rows per page times the pages the table has now), which costs nothing. The
manifest keeps the list (``tables``), and a trial restore (``verify
--restore``) counts what arrived and compares: exact counts must match,
estimates must be within ``TOLERANCE``.

Only tables that hold rows are listed (not partitioned parents, whose rows
are their partitions'), and not tables that belong to an extension (the
extension's own script fills them when a restore creates it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pgclone.humanize import human_count
from pgclone.pg import accounts, driver, postgres
from pgclone.pg.driver import sql

logger = logging.getLogger("pgclone")

EXACT_BELOW = 32 * 1024 * 1024  # bytes of table data: counted exactly below this
TOLERANCE = 0.2  # an estimated count must be within 20% of what arrived
LOCK_TIMEOUT = "2s"  # counting waits no longer than this for a table someone locked

_TABLES = """
SELECT n.nspname, c.relname, pg_table_size(c.oid), c.reltuples::float8, c.relpages,
       pg_relation_size(c.oid) / current_setting('block_size')::int
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class TableCount:
    schema: str
    name: str
    rows: int | None  # None: neither counted nor estimated (never analysed, too big)
    exact: bool

    @property
    def label(self) -> str:
        return postgres.display_name(self.schema, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "rows": self.rows, "exact": self.exact}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableCount:
        return cls(data["schema"], data["name"], data.get("rows"), bool(data.get("exact")))


class Snapshot:
    """A read-only REPEATABLE READ transaction whose snapshot ``pg_dump
    --snapshot=ID`` imports: open until left, so pg_dump can import it."""

    def __init__(self, conn: postgres.ConnInfo) -> None:
        self.conn = conn
        self.id = ""
        self._connection: Any = None

    def __enter__(self) -> Snapshot:
        self._connection = postgres.open_connection(self.conn)
        try:
            with self._connection.cursor() as cursor:
                cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute("SELECT pg_export_snapshot()")
                self.id = cursor.fetchone()[0]
        except BaseException:
            self._connection.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            with self._connection.cursor() as cursor:
                cursor.execute("ROLLBACK")
        except driver.Error:
            pass  # the connection is gone: so is the transaction
        finally:
            self._connection.close()

    def cancel(self) -> None:
        """Stop the statement running in the transaction, if any."""
        with contextlib.suppress(driver.Error):
            self._connection.cancel()

    def count_tables(self, excluded: Iterable[tuple[str, str]] = ()) -> list[TableCount]:
        """Every table and its rows as the dump sees them. The tables whose data
        the dump leaves out, ``excluded`` as (schema, name), have 0."""
        left_out = set(excluded)
        return count_tables(self._connection, exact_below=EXACT_BELOW, excluded=left_out)

    def count_accounts(self, users: accounts.SignIn) -> accounts.Counted | None:
        """The accounts of the user table that could sign in, as the dump sees them."""
        with self._connection.cursor() as cursor:
            return accounts.count_rows(cursor, users)


def count_database(conn: postgres.ConnInfo) -> list[TableCount]:
    """Every table of ``conn``'s database and its rows, all counted exactly."""
    with snapshot_transaction(conn, read_only=True) as cursor:
        return count_tables(cursor.connection, exact_below=None)


@contextlib.contextmanager
def snapshot_transaction(
    conn: postgres.ConnInfo, snapshot: str | None = None, *, read_only: bool = False
) -> Iterator[Any]:
    """A cursor in a REPEATABLE READ transaction (in ``snapshot``, one a
    :class:`Snapshot` exported, when given), rolled back on leaving: TEMP
    tables made in it go with it."""
    with postgres.connect(conn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ" + (" READ ONLY" if read_only else "")
        )
        try:
            if snapshot:
                # A utility statement: psycopg 3 can't bind it server-side.
                literal = sql.Literal(snapshot)
                cursor.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(literal))
            yield cursor
        finally:
            with contextlib.suppress(driver.Error):  # a broken connection rolls back by itself
                cursor.execute("ROLLBACK")


def count_tables(
    connection: driver.Connection,
    *,
    exact_below: int | None,
    excluded: Iterable[tuple[str, str]] = (),
) -> list[TableCount]:
    """The tables of the connection's database with their rows: exactly below
    ``exact_below`` bytes (every one when None), else estimated. Runs in the
    connection's current transaction (a snapshot) when it has one."""
    left_out = set(excluded)
    with connection.cursor() as cursor:
        cursor.execute(_TABLES)
        found = cursor.fetchall()
    estimates = {(row[0], row[1]): _estimate(*row[3:]) for row in found}
    counts: dict[tuple[str, str], int | None] = {}
    to_count = []
    for schema, name, size, *_ in found:
        if (schema, name) in left_out:
            counts[schema, name] = 0
        elif exact_below is None or size < exact_below:
            to_count.append((schema, name))
    counts.update(_exact(connection, to_count))
    return [
        TableCount(schema, name, rows, True)
        if (rows := counts.get((schema, name))) is not None
        else TableCount(schema, name, estimates[schema, name], False)
        for schema, name, *_ in found
    ]


def _estimate(reltuples: float, relpages: int, pages: int) -> int | None:
    """What the planner would guess: rows per page as last analysed, times pages now."""
    if reltuples is None or reltuples < 0:
        return None  # never vacuumed or analysed
    if relpages > 0:
        return round(reltuples / relpages * pages)
    return round(reltuples)


def _exact(
    connection: driver.Connection, tables: list[tuple[str, str]]
) -> dict[tuple[str, str], int | None]:
    """count(*) of each table in one statement; None for all when one can't be
    counted (locked by someone else for longer than LOCK_TIMEOUT, say)."""
    if not tables:
        return {}
    statement = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, count(*) FROM ONLY {}").format(  # as COPY and pg_dump: no heirs
            sql.Literal(index), sql.Identifier(schema, name)
        )
        for index, (schema, name) in enumerate(tables)
    )
    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT pgclone_count")
        # As pg_dump does: a row security policy makes the count fail, never filter it.
        cursor.execute("SET LOCAL row_security = off")
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        try:
            cursor.execute(statement)
            rows = dict(cursor.fetchall())
        except driver.Error as exc:  # a lock, a policy, a right missing
            cursor.execute("ROLLBACK TO SAVEPOINT pgclone_count")
            logger.info("pgclone: rows estimated, not counted: %s", str(exc).strip())
            return dict.fromkeys(tables)
        cursor.execute("RELEASE SAVEPOINT pgclone_count")
    return {table: rows[index] for index, table in enumerate(tables)}


@dataclass(frozen=True)
class Comparison:
    """What a trial restore found, against what the dump recorded."""

    problems: tuple[str, ...]
    tables: int
    rows: int
    exact: int
    estimated: int

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        text = f"{self.tables} tables, {human_count(self.rows)} rows"
        if self.passed:
            how = [f"{self.exact} counted exactly"]
            if self.estimated:
                how.append(f"{self.estimated} within {TOLERANCE:.0%} of an estimate")
            return f"{text}: as the dump recorded ({', '.join(how)})"
        return f"{text}; {len(self.problems)} problem(s):\n" + "\n".join(
            f"- {problem}" for problem in self.problems
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "problems": list(self.problems),
            "tables": self.tables,
            "rows": self.rows,
            "exact": self.exact,
            "estimated": self.estimated,
        }


def compare(recorded: list[TableCount], arrived: list[TableCount]) -> Comparison:
    """``arrived`` (counted exactly) against what the dump ``recorded``."""
    there = {(t.schema, t.name): t for t in arrived}
    expected = {(t.schema, t.name): t for t in recorded}
    problems = []
    exact = estimated = 0
    for table in recorded:
        got = there.get((table.schema, table.name))
        if got is None:
            problems.append(f"table {table.label} is missing")
        elif table.rows is None:
            continue  # nothing to compare with: that it exists will do
        elif table.exact:
            exact += 1
            if got.rows != table.rows:
                problems.append(
                    f"table {table.label} has {got.rows} rows, the dump recorded {table.rows}"
                )
        else:
            estimated += 1
            if abs((got.rows or 0) - table.rows) > TOLERANCE * table.rows:
                problems.append(
                    f"table {table.label} has {got.rows} rows, the dump recorded about "
                    f"{table.rows} (±{TOLERANCE:.0%})"
                )
    problems += [
        f"table {t.label} arrived but is not in what the dump recorded"
        for key, t in there.items()
        if key not in expected
    ]
    return Comparison(
        problems=tuple(problems),
        tables=len(arrived),
        rows=sum(t.rows or 0 for t in arrived),
        exact=exact,
        estimated=estimated,
    )
