"""Writing a planned dump (a config with ``scrub`` and/or ``subset``).

The dump step opens the snapshot as for any dump; here, a session imports
it and checks the plan (:func:`pgclone.plans.check`: nothing starts when it
would fail). Then one thread writes the container (:mod:`pgclone.containers`)
and hands it to the dump step (:class:`Source`), which compresses it into
storage as it compresses pg_dump's output for a plain dump: pg_dump's
pre-data archive; then, all at once, each planned table's ``COPY (SELECT …)
TO STDOUT`` and pg_dump's archive of the rest's data, their members
interleaved as they come; then pg_dump's post-data archive. The main
session hands itself the scrub key and finds the kept rows
(:func:`pgclone.plans.prepare`), handing each subset table to a psql session
of its own as soon as its kept rows are final, and copies the tables left
once it is done; a big table scrubbed whole is copied by psql sessions in
block ranges (:mod:`pgclone.parallel_copy`). The scrubbing COPYs are bound
by the server, the rest's pg_dump by compressing its output: on two CPUs
they overlap. PostgreSQL does the scrubbing and the sampling; nothing is
kept on disk, and memory holds a few members at a time.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pgclone import (
    conf,
    configs,
    containers,
    driver,
    parallel_copy,
    plans,
    postgres,
    scrub,
    search_path,
    subset,
    table_counts,
)
from pgclone.driver import sql
from pgclone.exceptions import LOCKED_HINT, CommandFailed, ConfigurationError, TableLocked

JOIN_TIMEOUT = 30
POLL_SECONDS = 0.2
CAUSE_WAIT = 2  # seconds a failure that stopping the dump caused waits for its cause
QUEUE_MEMBERS = 3  # members waiting for the tar (at most 1 MiB each): a few MiB in all
SOURCE_WRITES = 2  # the tar's writes waiting for the compressor: a member and its header


def first_cause(failures: list[BaseException]) -> BaseException | None:
    """The first failure that stopped a dump, not one that stopping it caused:
    ``Stopped`` (a producer told to stop), a statement cancelled at pgclone's
    request (psql's or the main session's "canceling statement due to user
    request"). None when there is none yet: it may be on its way."""
    for failure in failures:
        if not isinstance(failure, parallel_copy.Stopped) and not _cancelled(failure):
            return failure
    return None


def _cancelled(failure: BaseException) -> bool:
    """A statement cancelled by pgclone: SIGINT to psql (running a statement, in
    a COPY FROM STDIN, or between statements, which it leaves silently) or the
    main session's cancel."""
    text = str(failure)
    if "due to user request" in text or "COPY from stdin failed: canceled by user" in text:
        return True
    silent = isinstance(failure, CommandFailed) and not failure.stderr_tail
    return silent and failure.returncode == 3


def is_planned(config: configs.DumpConfig) -> bool:
    return config.scrub is not None or bool(config.subset)


def what_it_does(config: configs.DumpConfig) -> list[str]:
    """The words ``ls --long`` and the manifest use for what ``config`` does to the data."""
    done = (("scrubbed", config.scrub is not None), ("subset", bool(config.subset)))
    return [word for word, on in done if on]


def make_plan(
    conn: postgres.ConnInfo, config: configs.DumpConfig, exclude: list[Any]
) -> subset.Plan:
    """The plan of ``config``, from the catalog; raises ConfigurationError for
    what the database contradicts in it."""
    path = search_path.project_path(conn)
    with postgres.connect(conn) as connection, connection.cursor() as cursor:
        return subset.make_plan(cursor, config, path=path, exclude=exclude)


def tool_flags() -> list[str]:
    """What pg_dump must leave out of a planned dump, as its version spells it:
    large objects (their contents are never scrubbed) and, from PostgreSQL 18,
    the planner's statistics (they hold sample values of every column)."""
    major = tool_major(postgres.tool_version("pg_dump"))
    flags = ["--no-large-objects" if major >= 16 else "--no-blobs"]
    if major >= 18:
        flags.append("--no-statistics")
    return flags


def tool_major(version: str) -> int:
    """The major version in ``pg_dump --version``'s "pg_dump (PostgreSQL) 15.20 (…)"."""
    match = re.search(r"\)\s*(\d+)", version)
    return int(match[1]) if match else 0


@contextlib.contextmanager
def checked(conn: postgres.ConnInfo, snapshot: str, plan: subset.Plan) -> Iterator[Any]:
    """A cursor in ``snapshot`` with the plan checked (ConfigurationError for
    what would fail it); :func:`pgclone.plans.prepare` next."""
    with table_counts.snapshot_transaction(conn, snapshot) as cursor:
        lock(cursor, plan)
        problems = plans.check(cursor, plan)
        if problems:
            raise ConfigurationError(
                "The dump's plan can't run on this database:\n"
                + "\n".join(f"- {problem}" for problem in problems)
            )
        yield cursor


def lock(cursor: Any, plan: subset.Plan) -> None:
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
            f"Could not lock the tables to scrub or subset within "
            f"{postgres.LOCK_WAIT_SECONDS} s. {LOCKED_HINT}"
        ) from exc
    # The bound stays: a `where` or an sql rule may read other tables, whose locks
    # may wait behind an exclusive request queued behind the table counts' locks.


@dataclass
class Programs:
    """The pg_dumps of a container, started before the plan's kept rows are
    found: they read the catalog meanwhile, then wait on their pipes."""

    pre_data: Any
    rest: Any
    post_data: Any


@contextlib.contextmanager
def programs(
    conn: postgres.ConnInfo,
    *,
    snapshot: str,
    plan: subset.Plan,
    exclude_table_data: list[tuple[str, str]],
) -> Iterator[Programs]:
    """pg_dump of the pre-data, of the rest's data (without the planned tables'
    rows) and of the post-data, all in ``snapshot``; waited for on leaving (a
    failed one raises CommandFailed), killed if the block raises."""
    common = {"snapshot": snapshot, "extra": tool_flags()}
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
    post_data = postgres.pg_dump_argv(conn, sections=["post-data"], **common)
    with (
        postgres.spawn(pre_data, env=conn.env()) as first,
        postgres.spawn(rest, env=conn.env()) as second,
        postgres.spawn(post_data, env=conn.env()) as third,
    ):
        yield Programs(first, second, third)


def describe(config: configs.DumpConfig, plan: subset.Plan) -> dict[str, Any]:
    """What a planned dump's manifest says of its plan (never the key)."""
    return {
        "scrubbed": "scrubbed" in what_it_does(config),
        "subset": "subset" in what_it_does(config),
        "plan": {
            "digest": plan.digest,
            "scrub_key_id": scrub.key_id(conf.scrub_key()),
            "tables": [postgres.display_name(t.schema, t.name) for t in planned_tables(plan)],
        },
    }


def planned_tables(plan: subset.Plan) -> list[subset.PlannedTable]:
    """The tables whose rows pgclone writes: the others' pg_dump writes as they are."""
    return [table for table in plan.tables if table.transformed]


def header(config_name: str, plan: subset.Plan, encoding: str) -> dict[str, Any]:
    """The container's ``plan.json``: ``encoding`` is the COPY text's (the database's)."""
    return {
        "format": containers.FORMAT,
        "config": config_name,
        "digest": plan.digest,
        "encoding": encoding,
        "tables": [
            {
                "schema": table.schema,
                "name": table.name,
                "columns": list(table.columns),
                "member": containers.table_prefix(index),
            }
            for index, table in enumerate(planned_tables(plan))
        ],
    }


class Source:
    """The container as the dump step reads it, handed over by the thread that
    writes it a few writes at a time (what a pipe would do, without copying
    every byte through the kernel twice); ``rows`` once it is all read."""

    def __init__(self, depth: int = SOURCE_WRITES) -> None:
        self.rows: dict[tuple[str, str], int] = {}
        self.error: BaseException | None = None
        self._items: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = False  # by the reader: the writer stops
        self._ended = False  # the writer's end, read
        self._pending = b""

    def write(self, data: bytes) -> None:
        """The writer's next bytes; raises BrokenPipeError once the reader closed."""
        if data:
            self._put(data)

    def end(self) -> None:
        """The writer's end (written or not: ``error`` says)."""
        with contextlib.suppress(BrokenPipeError):
            self._put(None)

    def _put(self, item: bytes | None) -> None:
        while not self._closed:
            with contextlib.suppress(queue.Full):
                self._items.put(item, timeout=POLL_SECONDS)
                return
        raise BrokenPipeError("the dump step stopped reading the container")

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all of the next write when ``size`` is -1); b"" at the end."""
        if not self._pending:
            if self._ended:
                return b""
            item = self._items.get()
            if item is None:
                self._ended = True
                return b""
            self._pending = item
        if 0 <= size < len(self._pending):
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        data, self._pending = self._pending, b""
        return data

    def close(self) -> None:
        """The reader stops: the writer's next write raises BrokenPipeError."""
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                self._items.get_nowait()


class _Stream:
    """One stream's members, handed to ``put`` with its prefix (the thread
    writing the tar numbers them); at least one, so that an empty stream is
    there too."""

    def __init__(self, put: Any, prefix: str) -> None:
        self._put = put
        self._prefix = prefix
        self._empty = True

    def member(self, data: bytes) -> None:
        self._put((self._prefix, data))
        self._empty = False

    def close(self) -> None:
        if self._empty:
            self.member(b"")


@contextlib.contextmanager
def container(
    conn: postgres.ConnInfo,
    *,
    snapshot: str,
    cursor: Any,
    plan: subset.Plan,
    config_name: str,
    started: Programs,
) -> Iterator[Source]:
    """The container of a planned dump, written by a thread of its own: read
    it to its end inside the block. Raises what writing raised."""
    tables = list(enumerate(planned_tables(plan)))
    cursor.execute("SHOW server_encoding")  # the COPY text's (plans.ENCODING)
    encoding = cursor.fetchone()[0]
    source = Source()
    children = postgres.current_children()  # so that a cancelled job kills them too

    jobs, key = conf.dump_jobs(), conf.scrub_key()
    creates = dict(plan.setup)  # the TEMP tables of kept rows, by table
    # The psql sessions of a table copied in ranges; stopped, it stops every producer.
    sessions = parallel_copy.Sessions()
    members: queue.Queue = queue.Queue(maxsize=QUEUE_MEMBERS)
    failures: list[BaseException] = []

    def put(item: tuple[str | None, Any]) -> None:
        while not sessions.stopped:
            with contextlib.suppress(queue.Full):
                members.put(item, timeout=POLL_SECONDS)
                return
        raise parallel_copy.Stopped

    def stop() -> None:
        sessions.cancel()
        with contextlib.suppress(driver.Error):
            cursor.connection.cancel()

    def rest() -> None:
        stream = _Stream(put, containers.REST)
        while data := started.rest.stdout.read(containers.MEMBER_SIZE):
            stream.member(data)
        postgres.ended(started.rest)  # a pg_dump that failed stops the others at once
        stream.close()

    def copy_in_session(index: int, table: subset.PlannedTable) -> None:
        stream = _Stream(put, containers.table_prefix(index))
        rows = containers.RowMembers(stream.member)
        count = driver.copy_out(cursor, table.copy_statement(), rows.write)
        rows.close()
        stream.close()
        source.rows[table.schema, table.name] = count

    def in_helper(index: int, table: subset.PlannedTable) -> parallel_copy.Helper:
        """A subset table's COPY in a psql session of its own, its kept rows
        streamed there from the main session (COPY data: the TEMP tables are
        the main session's), while the main session goes on."""
        stream = _Stream(put, containers.table_prefix(index))

        def done(rows: int | None, error: BaseException | None) -> None:
            if error is not None:
                if not isinstance(error, parallel_copy.Stopped):
                    failures.append(error)
                stop()
                return
            with contextlib.suppress(parallel_copy.Stopped):
                stream.close()
            source.rows[table.schema, table.name] = rows

        helper = parallel_copy.Helper(
            conn, sessions=sessions, put=stream.member, done=done, name=f"pgclone-kept-{index}"
        )
        try:
            helper.stdin.write(parallel_copy.opening(cursor, snapshot, key, plans.SETTINGS))
            for oid in table.reads:  # a TID scan reads row_id only, a leaf the keys
                keep = subset.keep_table(oid)
                into = sql.SQL("{}" if table.leaf else "{} (row_id)").format(keep)
                copy_in = sql.SQL("{};\nCOPY {} FROM STDIN;\n").format(creates[oid], into)
                helper.stdin.write(copy_in.as_string(cursor).encode())
                rows = sql.SQL("{}" if table.leaf else "(SELECT row_id FROM {})").format(keep)
                copy_out = sql.SQL("COPY {} TO STDOUT").format(rows)
                driver.copy_out(cursor, copy_out, helper.stdin.write)  # C to C with psycopg2
                helper.stdin.write(b"\\.\n")
            helper.stdin.write(parallel_copy.closing(cursor, table.copy_statement()))
        except BrokenPipeError:
            pass  # psql stopped: its thread says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                helper.stdin.close()
        return helper

    def in_session(
        driven: list[tuple[int, subset.PlannedTable]], kept: list[tuple[int, subset.PlannedTable]]
    ) -> None:
        """The main session: the subset's kept rows, each subset table handed to
        a psql session (at most ``jobs`` at once) as soon as its kept rows are
        final; then, from its own cursor, the tables left and those scrubbed whole."""
        pending = dict(kept)
        helpers: list[parallel_copy.Helper] = []

        def on_final(final: set[int]) -> None:
            if sessions.stopped:  # a session failed: no statement more (its cancel
                raise parallel_copy.Stopped  # reaches only a statement running)
            for index, table in list(pending.items()):
                if set(table.reads) <= final and sum(h.running for h in helpers) < jobs:
                    del pending[index]
                    helpers.append(in_helper(index, table))

        try:
            plans.prepare(cursor, plan, key, on_final=on_final)
            for index, table in [*pending.items(), *driven]:
                if sessions.stopped:
                    raise parallel_copy.Stopped
                copy_in_session(index, table)
        except BaseException:
            stop()  # the sessions too, before they are waited for
            raise
        finally:
            for helper in helpers:
                helper.join()  # till its last member is handed on: a big table takes long

    def in_ranges(ranged: list[tuple[int, subset.PlannedTable, list[bytes]]]) -> None:
        """The tables psql sessions copy: one after another, each in its ranges at once."""
        for index, table, scripts in ranged:
            stream = _Stream(put, containers.table_prefix(index))
            source.rows[table.schema, table.name] = parallel_copy.copy_table(
                conn, scripts=scripts, write_member=stream.member, sessions=sessions
            )
            stream.close()

    def producer(work: Any, *args: Any) -> None:
        postgres.adopt_children(children)
        try:
            work(*args)
        except BaseException as exc:  # raised by the thread writing the tar
            failures.append(exc)
            stop()
            return
        with contextlib.suppress(parallel_copy.Stopped):
            put((None, None))

    def start() -> list[threading.Thread]:
        """The producers of the data streams, started at once."""
        driven, ranged, kept = [], [], []
        for index, table in tables:  # the cursor is this thread's until the producers start
            if table.kind != "whole":
                kept.append((index, table))
                continue
            ranges = parallel_copy.ranges_of(cursor, table, jobs)
            if ranges:
                common = {"snapshot": snapshot, "key": key, "table": table, "ranges": ranges}
                ranged.append((index, table, parallel_copy.scripts(cursor, **common)))
            else:
                driven.append((index, table))
        threads = [
            threading.Thread(target=producer, args=args, name=f"pgclone-{name}", daemon=True)
            for name, args in (
                ("rest", (rest,)),
                ("copy", (in_session, driven, kept)),
                ("copy-ranges", (in_ranges, ranged)),
            )
        ]
        for thread in threads:
            thread.start()
        return threads

    def write_data(tar: containers.TarWriter) -> None:
        """The pre-data, then the data streams as their members come: their
        producers start first (the main session finds the kept rows while
        pg_dump writes the pre-data)."""
        counts: dict[str, int] = {}
        threads = start()
        running = len(threads)
        failed_at = None
        try:
            tar.copy(containers.PRE_DATA, started.pre_data.stdout)
            postgres.ended(started.pre_data)
            while running:
                if failures:  # what stopped the dump, rather than what stopping it caused
                    failed_at = failed_at or time.monotonic()
                    cause = first_cause(failures)
                    if cause is not None or time.monotonic() - failed_at > CAUSE_WAIT:
                        raise cause or failures[0]
                try:
                    stream, data = members.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if stream is None:
                    running -= 1
                    continue
                count = counts.get(stream, 0)
                tar.member(f"{stream}/{count:06d}", data)
                counts[stream] = count + 1
        finally:
            if running:
                stop()
            for thread in threads:
                thread.join(JOIN_TIMEOUT)

    def produce() -> None:
        postgres.adopt_children(children)
        try:
            tar = containers.TarWriter(source.write)
            tar.json(containers.PLAN, header(config_name, plan, encoding))
            write_data(tar)
            tar.copy(containers.POST_DATA, started.post_data.stdout)
            postgres.ended(started.post_data)
            tar.close()
        except BaseException as exc:  # handed to the reading thread
            source.error = exc
        finally:
            source.end()

    thread = threading.Thread(target=produce, name="pgclone-container", daemon=True)
    thread.start()
    try:
        yield source
    except BaseException:
        source.close()  # the writer stops on a broken pipe; a COPY is cancelled
        stop()
        thread.join(JOIN_TIMEOUT)
        raise
    thread.join()
    source.close()
    if source.error is not None:
        raise source.error
