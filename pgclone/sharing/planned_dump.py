"""Preparing a dump's container: a planned dump's (a config with ``scrub``
and/or ``subset``), or a plain dump's.

The dump step opens the snapshot; here, a planned dump's plan is made from
the catalog (:func:`make_plan`), a session imports the snapshot (where a
plain dump's plan is read: every table copied as it is), locks the tables
whose rows pgclone writes and checks the plan (:func:`checked`: nothing
starts when it would fail), and pg_dump's three archives are started
(:func:`pg_dumps`).
:mod:`pgclone.archive.container_writer` then writes the container from them. The
scrubbing COPYs are bound by the server, the rest's pg_dump by compressing
its output: on two CPUs they overlap. PostgreSQL does the scrubbing and the
sampling; nothing is kept on disk, and memory holds a few members at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pgclone import conf
from pgclone.exceptions import LOCKED_HINT, ConfigurationError, TableLocked, UndecidedColumns
from pgclone.pg import catalog, driver, postgres, programs, table_counts
from pgclone.pg.driver import sql
from pgclone.sharing import plans, review, scrub, sections, subset


def make_plan(
    conn: postgres.ConnInfo,
    asked: sections.Sharing,
    exclude: list[Any],
    path: list[str],
    config: str = "",
    connection: Any = None,
) -> subset.Plan:
    """The plan of ``asked``, from the catalog (the models' tables found in the
    schemas of ``path``); raises ConfigurationError for what the database
    contradicts in it, and UndecidedColumns, naming them, when ``asked`` scrubs
    and leaves a column undecided (``exclude``: the tables whose rows are left
    out, as (schema, table)); ``connection``: one of pgclone's to ``conn``'s
    database, if the caller has one open."""
    with postgres.session(conn, connection) as connection, connection.cursor() as cursor:
        if asked.scrub is None:  # a subset alone: it decides nothing on columns
            return subset.make_plan(cursor, asked, path=path, exclude=exclude)
        decided = review.decide(cursor, asked, path=path, left_out=exclude)
        if decided.undecided:
            raise UndecidedColumns(review.refusal(decided.undecided, config))
        plan = subset.make_plan(cursor, decided.sharing, path=path, exclude=exclude)
        return dataclasses.replace(plan, decisions=decided.review.digest)


def left_out(
    conn: postgres.ConnInfo, asked: sections.Sharing, connection: Any = None
) -> list[tuple[str, str]]:
    """(schema, table) of the tables whose rows a dump of ``asked`` leaves out by
    name: its ``exclude_tables`` and, for a scrubbed dump, the tables holding
    credentials it doesn't keep (pgclone.sharing.credentials)."""
    emptied = []
    if asked.scrub is not None:  # a plain dump reads no catalog for it
        with postgres.session(conn, connection) as connection, connection.cursor() as cursor:
            emptied = review.emptied(cursor, asked)
    return sorted({*asked.decisions.exclude_tables, *emptied})


def tool_flags() -> list[str]:
    """What pg_dump must leave out of a planned dump, as its version spells it:
    large objects (their contents are never scrubbed) and, from PostgreSQL 18,
    the planner's statistics (they hold sample values of every column)."""
    major = tool_major(programs.tool_version("pg_dump"))
    flags = ["--no-large-objects" if major >= 16 else "--no-blobs"]
    if major >= 18:
        flags.append("--no-statistics")
    return flags


def tool_major(version: str) -> int:
    """The major version in ``pg_dump --version``'s "pg_dump (PostgreSQL) 15.20 (…)"."""
    match = re.search(r"\)\s*(\d+)", version)
    return int(match[1]) if match else 0


@contextlib.contextmanager
def checked(
    conn: postgres.ConnInfo,
    snapshot: str,
    plan: subset.Plan | None,
    exclude: list[tuple[str, str]] = (),
) -> Iterator[tuple[Any, subset.Plan]]:
    """A cursor in ``snapshot`` and the plan, checked (ConfigurationError for
    what would fail it); :func:`pgclone.sharing.plans.prepare` next. No plan:
    a plain dump's, of the tables in the snapshot but ``exclude``'s."""
    with (
        table_counts.snapshot_transaction(conn, snapshot) as cursor,
        programs.session_among_children(cursor.connection),  # a cancelled job cancels it
    ):
        if plan is None:
            left_out = set(exclude)
            tables = catalog.data_tables(cursor)
            plan = subset.plain_plan([t for t in tables if (t[1], t[2]) not in left_out])
        lock(cursor, plan)
        problems = plans.check(cursor, plan)
        if problems:
            raise ConfigurationError(
                "The dump's plan can't run on this database:\n"
                + "\n".join(f"- {problem}" for problem in problems)
            )
        yield cursor, plan


def lock(cursor: driver.Cursor, plan: subset.Plan) -> None:
    """ACCESS SHARE on every table whose rows pgclone writes, until the dump's
    end, as pg_dump takes on the tables it writes: none can then be truncated or
    rewritten (which the snapshot would not see: its COPY would find it empty)
    before its rows are copied, however late that is. Waits at most
    ``postgres.LOCK_WAIT_SECONDS``; raises TableLocked."""
    tables = planned_tables(plan)
    if not tables:
        return
    (wait,) = plans.set_statements([("lock_timeout", f"{postgres.LOCK_WAIT_SECONDS}s")])
    cursor.execute(wait)
    names = sql.SQL(", ").join(subset.only(table.schema, table.name) for table in tables)
    try:
        cursor.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(names))
    except driver.errors.LockNotAvailable as exc:
        raise TableLocked(
            f"Could not lock the tables to copy within "
            f"{postgres.LOCK_WAIT_SECONDS} s. {LOCKED_HINT}"
        ) from exc
    # The bound stays: a `where` or an sql rule may read other tables, whose locks
    # may wait behind an exclusive request queued behind the table counts' locks.


# How long a planned dump's pg_dumps wait for their locks. They take them after
# the main session took its own (see lock), and their output is read only as the
# container is written: one queued behind an exclusive request (which waits for
# the main session, or for another of them that waits on its pipe) would wait
# for ever. They give way, as the psql sessions do (parallel_copy.LOCK_WAIT); a
# bound on each LOCK statement (pg_dump's --lock-wait-timeout), not on the wait
# alone, so a little longer.
PG_DUMP_LOCK_WAIT_SECONDS = 5


@dataclass
class Programs:
    """The pg_dumps of a container, started before the plan's kept rows are
    found: they read the catalog meanwhile, then wait on their pipes."""

    pre_data: Any
    rest: Any
    post_data: Any

    def stop(self) -> None:
        """End those still running, from any thread: nothing waits on their
        output then. SIGTERM, on which pg_dump asks the server to cancel its
        statement (a LOCK queued behind another session's, say) and exits."""
        for proc in (self.pre_data, self.rest, self.post_data):
            with contextlib.suppress(OSError):
                proc.terminate()


@contextlib.contextmanager
def pg_dumps(
    conn: postgres.ConnInfo,
    *,
    snapshot: str,
    plan: subset.Plan,
    exclude_table_data: list[tuple[str, str]],
) -> Iterator[Programs]:
    """pg_dump of the pre-data, of the rest's data (without the rows pgclone
    writes) and of the post-data, all in ``snapshot``; waited for on leaving (a
    failed one raises CommandFailed), killed if the block raises. A plain
    dump's keep what a plain pg_dump writes (large objects, statistics)."""
    common = {
        "snapshot": snapshot,
        "extra": [] if plan.copies_all else tool_flags(),
        "lock_wait_seconds": PG_DUMP_LOCK_WAIT_SECONDS,
    }
    pre_data = postgres.pg_dump_argv(conn, sections=["pre-data"], **common)
    rest = postgres.pg_dump_argv(
        conn,
        sections=["data"],
        exclude_table_data=[
            *exclude_table_data,
            *((t.schema, t.name) for t in planned_tables(plan)),
        ],
        **common,
    )
    # With the pre-data's entries in its table of contents (restored with
    # --section=post-data), pg_restore --jobs knows which tables each foreign
    # key locks and never runs two that could deadlock at once.
    post_data = postgres.pg_dump_argv(conn, sections=["pre-data", "post-data"], **common)
    with (
        programs.spawn(pre_data, env=conn.env()) as first,
        programs.spawn(rest, env=conn.env()) as second,
        programs.spawn(post_data, env=conn.env()) as third,
    ):
        yield Programs(first, second, third)


def describe(asked: sections.Sharing, plan: subset.Plan) -> dict[str, Any]:
    """What a planned dump's manifest says of its plan (never the key)."""
    tables = [postgres.display_name(t.schema, t.name) for t in planned_tables(plan)]
    described = {
        # "scrub": {} that changes no table is not scrubbed (payloads.counts_as_scrubbed)
        "scrubbed": "scrubbed" in asked.what_it_does() and bool(tables),
        "subset": "subset" in asked.what_it_does(),
        "plan": {
            "digest": plan.digest,
            "scrub_key_id": scrub.key_id(conf.scrub_key()),
            "tables": tables,
        },
    }
    if plan.decisions:
        described["plan"]["decisions"] = plan.decisions
    return described


def planned_tables(plan: subset.Plan) -> list[subset.PlannedTable]:
    """The tables whose rows pgclone writes (a plain dump's: all): the others'
    pg_dump writes as they are."""
    return [table for table in plan.tables if plan.copies_all or table.transformed]
