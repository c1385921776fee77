"""Running a :class:`pgclone.sharing.subset.Plan` inside one snapshot of the database.

The dump step exports a snapshot (``pg_export_snapshot()``) shared with
``pg_dump --snapshot``; in a session that imported it, :func:`check` finds
what would make the dump fail (before pg_dump starts), :func:`prepare` hands
the scrub key to the session and fills the TEMP tables of kept rows, and each
planned table's ``copy_statement()`` then writes its rows. Everything happens
in SQL: Python only repeats the statements of the fixed point until none adds
a row.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

from pgclone import conf
from pgclone.exceptions import ConfigurationError
from pgclone.pg import driver, postgres, table_counts
from pgclone.pg.driver import sql
from pgclone.sharing import scrub
from pgclone.sharing.subset import Plan, keep_table

# COPY text as pg_dump writes it, whatever the database's or role's defaults,
# in the sessions that write it and in those that read it back: dates read back
# the same (a DMY DateStyle would swap day and month), floats exact, XML content.
# Its encoding is the database's (ENCODING, below; plan.json records it), as
# pg_dump's is: a SQL_ASCII database's bytes pass as they are.
COPY_TEXT = (
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("xmloption", "content"),
)
# The session's settings for the fixed point: hash tables of kept keys in memory,
# TEMP tables in local buffers rather than temporary files (set for the
# transaction only; temp_buffers counts before the session's first TEMP table),
# no JIT compilation (it costs more than these statements save by it), and
# bitmap scans rather than index scans for ``= ANY(ARRAY(…))`` of kept keys: the
# planner can't tell how many keys the array holds, and a bitmap reads the heap
# in its order, never worse than reading it all. And COPY text as pg_dump's.
SESSION = (
    ("work_mem", "128MB"),
    ("temp_buffers", "128MB"),
    ("jit", "off"),
    ("enable_indexscan", "off"),
    # as pg_dump: a row security policy fails the dump, never filters its rows
    ("row_security", "off"),
    # as pg_dump: no timeout of the role's or the database's cuts a long COPY
    # short, nor ends the main session while it waits for the others
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    *COPY_TEXT,
)
# The client encoding of the dump's sessions: the database's (a DO prints nothing).
ENCODING = (
    "DO $$ BEGIN PERFORM set_config('client_encoding', "
    "current_setting('server_encoding'), true); END $$"
)


def set_statements(
    settings: Iterable[tuple[str, str]], *, local: bool = True
) -> tuple[sql.Composable, ...]:
    """``SET [LOCAL] name = value`` of each pair (for the transaction only, when ``local``)."""
    template = "SET LOCAL {} = {}" if local else "SET {} = {}"
    return tuple(
        sql.SQL(template).format(sql.Identifier(name), sql.Literal(value))
        for name, value in settings
    )


# As statements, which the driver's session and psql's both run (SET prints nothing).
SETTINGS = (*set_statements(SESSION), sql.SQL(ENCODING))
ANALYZE_GROWTH = 1.5  # analyze a keep table once it has half as many rows again


# How a session gets the scrub key: as COPY data into a TEMP table that a DO block
# reads into the transaction's setting (a DO prints nothing: psql runs these too,
# its output being a COPY's rows), then dropped.
KEY_STATEMENTS = (
    "CREATE TEMP TABLE pgclone_scrub_key (value text) ON COMMIT DROP",
    "COPY pg_temp.pgclone_scrub_key (value) FROM STDIN",  # the key's line follows
    "DO $$ BEGIN PERFORM set_config('pgclone.scrub_key', "  # scrub.KEY_SETTING
    "(SELECT value FROM pg_temp.pgclone_scrub_key), true); END $$",
    "DROP TABLE pg_temp.pgclone_scrub_key",
)


def set_key(cursor: driver.Cursor, key: str) -> None:
    """Give the transaction the scrub key (``pgclone.scrub_key``, local to it).

    The key travels as COPY data, never in a statement's text, so it shows
    neither in pg_stat_activity nor in the server's statement logs.
    """
    create, copy, read, drop = KEY_STATEMENTS
    cursor.execute(create)
    driver.copy_in(cursor, copy, (scrub.key_setting(key) + "\n").encode())
    cursor.execute(read)
    cursor.execute(drop)


# pgclone's sessions search pg_catalog alone (postgres.PINNED_SEARCH_PATH).
UNQUALIFIED_HINT = (
    "pgclone's sessions look up names in pg_catalog only, so that nothing planted in the "
    "database can run in them: name a table, or a function that is not PostgreSQL's own, "
    "with its schema (public.orders, public.unaccent(…))"
)


def _attempt(cursor: driver.Cursor, statement: Any, params: Any = None) -> tuple[str | None, list]:
    """Run a statement under a savepoint: (the server's error message or None, rows)."""
    cursor.execute("SAVEPOINT pgclone_check")
    try:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    except driver.Error as exc:
        cursor.execute("ROLLBACK TO SAVEPOINT pgclone_check")
        message = (str(exc).strip().splitlines() or ["error"])[0]
        if isinstance(exc, driver.errors.UndefinedTable | driver.errors.UndefinedFunction):
            message += f". {UNQUALIFIED_HINT}"
        return message, []
    cursor.execute("RELEASE SAVEPOINT pgclone_check")
    return None, rows


def check(cursor: driver.Cursor, plan: Plan) -> list[str]:
    """What would fail the dump of this plan, found before it starts: a ``where``
    that isn't valid SQL, a root without rows, a ``sql`` rule whose output does
    not fit its column (type, length, uniqueness)."""
    problems = []
    for root in plan.roots:
        error, _ = _attempt(cursor, sql.SQL("EXPLAIN {}").format(root.rows))
        if error:
            problems.append(
                f"The subset of {root.model} is not valid SQL for {root.table}: {error}"
            )
            continue
        cursor.execute(sql.SQL("SELECT EXISTS ({})").format(root.rows))
        if not cursor.fetchone()[0]:
            problems.append(
                f"The subset root {root.model} has no rows to keep ({root.table} is empty or "
                "its 'where' matches nothing): a subset needs at least one."
            )
    for table, name, source, expression, column in plan.outputs:
        values = sql.SQL("SELECT {} AS v FROM {} AS t").format(expression, source)
        # No parameters: a % in a rule (modulo, LIKE) is the rule's, not a placeholder.
        long = sql.SQL(
            "SELECT count(*) FILTER (WHERE length(v::text) > {}), "
            "count(*) FILTER (WHERE v IS NULL) FROM ({}) s"
        ).format(sql.Literal(column.max_length or 2**31 - 1), values)
        error, rows = _attempt(cursor, long)
        if error:
            problems.append(f"The sql rule of {table}.{name} fails: {error}")
            continue
        too_long, nulls = rows[0]
        if too_long:
            problems.append(
                f"The sql rule of {table}.{name} writes values longer than the column's "
                f"{column.max_length} characters."
            )
        if nulls and not column.nullable:
            problems.append(
                f"The sql rule of {table}.{name} writes NULL, and the column is NOT NULL."
            )
        if column.unique:
            cursor.execute(
                sql.SQL(
                    "SELECT EXISTS (SELECT FROM ({}) s WHERE v IS NOT NULL "
                    "GROUP BY v HAVING count(*) > 1)"
                ).format(values)
            )
            if cursor.fetchone()[0]:
                problems.append(
                    f"The sql rule of {table}.{name} gives equal values to distinct rows, "
                    "and the column is unique."
                )
    return problems


def prepare(
    cursor: driver.Cursor,
    plan: Plan,
    key: str | None = None,
    on_final: Callable[[set[int]], Any] | None = None,
) -> None:
    """Hand the key to the session and fill the TEMP tables of kept rows.

    While statements are left to run, ``on_final`` gets the tables (oids)
    whose kept rows no statement left can add to, after the roots' and after
    each statement (the same tables again, and more): their rows can be
    written already, from another session, while this one goes on.

    Raises ConfigurationError when a subset root keeps no row.
    """
    for statement in SETTINGS:  # before the session's first TEMP table
        cursor.execute(statement)
    if plan.copies_all:  # a plain dump's: nothing to scrub, nothing to keep
        return
    set_key(cursor, conf.scrub_key() if key is None else key)
    for _, statement in plan.setup:
        cursor.execute(statement)
    seeded = collections.Counter()
    for root in plan.roots:
        cursor.execute(root.seed, list(root.params) or None)  # a where may hold %
        if cursor.rowcount == 0:
            raise ConfigurationError(f"The subset root {root.model} keeps no rows.")
        seeded[root.oid] += cursor.rowcount
    _to_fixed_point(cursor, plan, seeded, on_final)


def kept(cursor: driver.Cursor, plan: Plan) -> dict[str, int]:
    """After :func:`prepare`: the rows kept per subset table (by its display
    name), but for the leaves, whose rows are chosen as they are written. (A
    dump counts the rows its COPYs write instead.)"""
    counts = {}
    for table in plan.tables:
        if table.kind != "whole" and not table.leaf:
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(keep_table(table.oid)))
            counts[postgres.display_name(table.schema, table.name)] = cursor.fetchone()[0]
    return counts


def _to_fixed_point(
    cursor: driver.Cursor,
    plan: Plan,
    rows: collections.Counter,
    on_final: Callable[[set[int]], Any] | None = None,
) -> None:
    """Run the plan's steps until none adds a row: in rounds, each running only
    the steps with an input that grew since they last ran (Python loops over
    rounds, never over rows). A TEMP table has no statistics until ANALYZE
    (autovacuum never sees it): each is analyzed once it has grown enough for
    the planner to choose between a hash and an index lookup of its keys."""
    stale = set(range(len(plan.steps)))
    analyzed = collections.Counter()  # rows of each keep table when last analyzed

    def report() -> None:
        if on_final is not None and stale:
            on_final(final_tables(plan, stale))

    report()
    while stale:
        for index, step in enumerate(plan.steps):
            if index not in stale:
                continue
            stale.discard(index)
            for oid in step.inputs:
                if rows[oid] > ANALYZE_GROWTH * analyzed[oid]:
                    cursor.execute(sql.SQL("ANALYZE {}").format(keep_table(oid)))
                    analyzed[oid] = rows[oid]
            cursor.execute(step.statement)
            if cursor.rowcount > 0:
                rows[step.output] += cursor.rowcount
                stale.update(i for i, s in enumerate(plan.steps) if step.output in s.inputs)
            report()


def final_tables(plan: Plan, stale: set[int]) -> set[int]:
    """The tables whose kept rows can't grow any more: no step that may still
    run (``stale``, or reading what one of those adds to) adds to them."""
    live, frontier = set(stale), list(stale)
    while frontier:
        output = plan.steps[frontier.pop()].output
        for index, step in enumerate(plan.steps):
            if index not in live and output in step.inputs:
                live.add(index)
                frontier.append(index)
    growing = {plan.steps[index].output for index in live}
    return {oid for oid, _ in plan.setup if oid not in growing}


def run_plan(
    conn: postgres.ConnInfo, plan: Plan, *, key: str | None = None, snapshot: str | None = None
) -> dict[str, list[tuple]]:
    """Every planned table's rows (by display name), as a dump would write them."""
    with table_counts.snapshot_transaction(conn, snapshot) as cursor:
        problems = check(cursor, plan)
        if problems:
            raise ConfigurationError("\n".join(problems))
        prepare(cursor, plan, key)
        rows = {}
        for table in plan.tables:
            cursor.execute(sql.SQL("{} ORDER BY 1").format(table.select))
            rows[postgres.display_name(table.schema, table.name)] = cursor.fetchall()
        return rows
