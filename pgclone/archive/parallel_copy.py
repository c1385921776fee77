"""Copying big tables with psql, in several sessions at once.

One backend uses one CPU: a table's COPY is bound by it (a scrubbed table's
the more, its rules running row by row). And a driver's COPY costs a Python
call per row, which on a 2-CPU machine takes much of the CPU the server needs.
So a *whole* table (a plain dump's, or a planned one scrubbed and no part of
a subset: it needs none of the main session's TEMP tables) of at least
``PSQL_BYTES`` is copied by ``psql``, whose output is read in big pieces; from
``MIN_BYTES`` (and PostgreSQL 14, for TID Range Scans) it is split into block
ranges of about ``RANGE_BYTES`` (at least as many as the dump's sessions),
each read by ``COPY (SELECT … WHERE t.ctid >= … AND t.ctid < …) TO STDOUT`` in
a psql session of its own, the dump's ``PGCLONE_DUMP_JOBS`` sessions taking
them in turn. Each session imports the dump's snapshot and, in a planned
dump, gets the scrub key as COPY data on psql's stdin. Every tuple lives in
one block, so the ranges hold each row of the snapshot once.

Each session's output is cut at its last newline into members of whole rows
and put on a bounded queue; the thread that started them hands them on to
the table's stream as they come (:func:`pgclone.archive.container_writer.container`
interleaves them with the other data streams), so memory stays flat. The first failure
cancels the other sessions (SIGINT: psql asks the server to cancel) and is
raised once they all stopped.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pgclone.archive import containers
from pgclone.pg import driver, postgres, programs
from pgclone.pg.driver import sql
from pgclone.sharing import plans, scrub, subset

MIN_BYTES = 64 * 1024 * 1024  # copied in block ranges from this size
RANGE_BYTES = 256 * 1024 * 1024  # about the most a range holds: a session takes the next soon
# The main session holds ACCESS SHARE on the tables these sessions read (see
# planned_dump.lock): a session waits for its own only behind another session's
# exclusive request, which waits for the dump. It gives way (fails) at once.
LOCK_WAIT = "2s"
PSQL_BYTES = 8 * 1024 * 1024  # copied by psql rather than the driver from this size
READ_SIZE = 256 * 1024  # psql's output read at a time, cut at its last newline into a member
MIN_SERVER = 140000  # TID Range Scans; before, each range would read the whole table
JOIN_TIMEOUT = 30
POLL_SECONDS = 0.2

Range = tuple[int, int | None]  # first block, block after the last (None: to the end)


class Stopped(Exception):
    """The copy was stopped: another session failed, or the dump was cancelled."""


class Sessions:
    """The connections of the sessions copying now, to cancel them from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[Any] = set()
        self.stopped = False

    @contextlib.contextmanager
    def running(self, connection: driver.Connection) -> Iterator[None]:
        """Registers ``connection`` while the block runs; raises Stopped once stopped."""
        with self._lock:
            if self.stopped:
                raise Stopped
            self._connections.add(connection)
        try:
            yield
        finally:
            with self._lock:
                self._connections.discard(connection)

    def cancel(self) -> None:
        """Stop every session: their running statements are cancelled, no new one starts."""
        with self._lock:
            self.stopped = True
            for connection in self._connections:
                with contextlib.suppress(driver.Error):
                    connection.cancel()


def block_ranges(blocks: int, jobs: int) -> list[Range]:
    """``blocks`` split in at most ``jobs`` ranges of about as many blocks, the
    last open-ended (the table may have grown since it was measured)."""
    count = min(jobs, blocks)
    if count < 1:
        return []
    starts = [blocks * i // count for i in range(count)]
    return list(zip(starts, [*starts[1:], None], strict=True))


def ranges_of(cursor: driver.Cursor, table: subset.PlannedTable, jobs: int) -> list[Range]:
    """The ranges ``table`` is copied in, one psql session each: none when the
    main session copies it (a subset table, a small heap), one for a mid-sized
    heap, from ``MIN_BYTES`` (from PostgreSQL 14: TID Range Scans) one per
    ``RANGE_BYTES`` and at least ``jobs``."""
    if table.reads:  # it reads kept rows: copied once they are found
        return []
    cursor.execute(
        "SELECT pg_relation_size(%s::oid::regclass), current_setting('block_size')::bigint, "
        "current_setting('server_version_num')::int",
        [table.oid],
    )
    size, block_size, server = cursor.fetchone()
    if size < PSQL_BYTES:
        return []
    if size < MIN_BYTES or server < MIN_SERVER:
        return [(0, None)]
    return block_ranges(size // block_size, max(jobs, -(-size // RANGE_BYTES)))


def range_copy_statement(table: subset.PlannedTable, first: int, end: int | None) -> sql.Composable:
    """``table.copy_statement()`` of the rows in blocks ``first`` to ``end`` (excluded)."""
    if (first, end) == (0, None):
        return table.copy_statement()
    where = sql.SQL("t.ctid >= {}::tid").format(sql.Literal(f"({first},0)"))
    if end is not None:
        below = sql.SQL("t.ctid < {}::tid").format(sql.Literal(f"({end},0)"))
        where = sql.SQL("{} AND {}").format(where, below)
    return sql.SQL("COPY ({} WHERE {}) TO STDOUT").format(table.select, where)


def scripts(
    cursor: driver.Cursor,
    *,
    snapshot: str,
    key: str | None,
    table: subset.PlannedTable,
    ranges: list[Range],
) -> list[bytes]:
    """What each range's psql session runs (rendered with ``cursor``, in the
    thread that owns it, before any session starts)."""
    return [_script(cursor, snapshot, key, range_copy_statement(table, *r)) for r in ranges]


def copy_table(
    conn: postgres.ConnInfo,
    *,
    scripts: list[bytes],
    write_member: Callable[[bytes], Any],
    sessions: Sessions,
) -> int:
    """Copy each range in a psql session of its own (``scripts``, one each), all
    at once, handing each member of whole rows to ``write_member`` as it comes;
    returns the rows. Raises the first failure once every session has stopped."""
    outcomes: queue.Queue = queue.Queue(maxsize=len(scripts))

    def put(item: Any) -> None:  # a member, then the session's rows or its failure
        while not sessions.stopped:
            with contextlib.suppress(queue.Full):
                outcomes.put(item, timeout=POLL_SECONDS)
                return
        raise Stopped

    def done(rows: int | None, error: BaseException | None) -> None:
        with contextlib.suppress(Stopped):
            put(rows if error is None else error)

    helpers: list[Helper] = []
    rows, running = 0, len(scripts)
    try:
        for number, script in enumerate(scripts):
            helper = Helper(
                conn, sessions=sessions, put=put, done=done, name=f"pgclone-copy-{number}"
            )
            helpers.append(helper)
            with contextlib.suppress(BrokenPipeError):  # psql stopped: its outcome says why
                helper.stdin.write(script)  # a few hundred bytes: never blocks on the pipe
                helper.stdin.close()
        while running:
            outcome = _get(outcomes, sessions)
            if isinstance(outcome, bytes):
                write_member(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                rows += outcome
                running -= 1
    finally:
        if running:
            sessions.cancel()
        for helper in helpers:
            helper.join(JOIN_TIMEOUT)
    return rows


def psql_argv(conn: postgres.ConnInfo) -> list[str]:
    """psql running the script on its stdin, printing nothing but COPY's rows."""
    return ["psql", "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
            "--file=-", f"--dbname={conn.conninfo()}"]  # fmt: skip


def _script(
    cursor: driver.Cursor, snapshot: str, key: str | None, statement: sql.Composable
) -> bytes:
    """What psql runs: a transaction in ``snapshot``, the scrub key set as
    :func:`pgclone.sharing.plans.set_key` sets it (COPY data on psql's stdin: in no
    statement's text, argument or environment variable), then the COPY."""
    return opening(cursor, snapshot, key, plans.SETTINGS) + closing(cursor, statement)


def opening(
    cursor: driver.Cursor,
    snapshot: str,
    key: str | None,
    settings: tuple[sql.Composable, ...] = (),
) -> bytes:
    """A psql script's start: the transaction in ``snapshot``, ``settings``
    (statements, as :data:`pgclone.sharing.plans.SETTINGS`) for it, and the scrub
    key (None: a plain dump's session, which needs none)."""
    create, copy, read, drop = plans.KEY_STATEMENTS
    lines = [
        "BEGIN ISOLATION LEVEL REPEATABLE READ;",
        sql.SQL("SET TRANSACTION SNAPSHOT {};").format(sql.Literal(snapshot)).as_string(cursor),
        *(
            f"{statement.as_string(cursor)};"
            for statement in (*plans.set_statements([("lock_timeout", LOCK_WAIT)]), *settings)
        ),
    ]
    if key is not None:
        lines += [f"{create};", f"{copy};", scrub.key_setting(key), "\\.", f"{read};", f"{drop};"]
    return ("\n".join(lines) + "\n").encode()


def closing(cursor: driver.Cursor, statement: sql.Composable) -> bytes:
    """A psql script's end: ``statement`` (the COPY), then the end of the transaction."""
    return (statement.as_string(cursor) + ";\nROLLBACK;\n").encode()


class _Program:
    """A psql session as :class:`Sessions` cancels it: SIGINT, on which psql
    asks the server to cancel its statement, and stops (ON_ERROR_STOP)."""

    def __init__(self, proc: Any) -> None:
        self._proc = proc

    def cancel(self) -> None:
        with contextlib.suppress(OSError):
            self._proc.send_signal(signal.SIGINT)


class Helper:
    """A psql session run by a thread of its own, whose script another thread
    writes on :attr:`stdin` (then closes it): a range's COPY, or a subset
    table's after the kept rows it reads, streamed from the session that found
    them. psql hands the rows over in big reads rather than one Python call per
    row (what a driver's COPY costs: most of a CPU for a table scrubbed in two
    sessions). Its output goes to ``put`` in members of whole rows;
    ``done(rows, error)`` is called from its thread when it ends, either way."""

    def __init__(
        self,
        conn: postgres.ConnInfo,
        *,
        sessions: Sessions,
        put: Callable[[bytes], Any],
        done: Callable[[int | None, BaseException | None], Any],
        name: str,
    ) -> None:
        self._proc: Any = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(conn, sessions, put, done, programs.current_children()),
            name=name,
            daemon=True,
        )
        self._thread.start()
        self._started.wait()
        if self._proc is None:
            raise self._error or Stopped

    @property
    def stdin(self) -> Any:
        return self._proc.stdin

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the session's end (a cancel ends it soon)."""
        self._thread.join(timeout)

    def _run(
        self,
        conn: postgres.ConnInfo,
        sessions: Sessions,
        put: Callable[[bytes], Any],
        done: Callable[[int | None, BaseException | None], Any],
        children: set,
    ) -> None:
        programs.adopt_children(children)
        try:
            with (
                programs.spawn(psql_argv(conn), env=conn.env(), stdin=subprocess.PIPE) as proc,
                sessions.running(_Program(proc)),
            ):
                self._proc = proc
                self._started.set()
                rows = read_members(proc.stdout, put)
        except BaseException as exc:  # handed to ``done``
            self._error = exc
            self._started.set()
            done(None, exc)
            return
        done(rows, None)


def read_members(stdout: Any, put: Callable[[bytes], Any]) -> int:
    """psql's COPY output read to its end in big pieces, each cut at its last
    newline (COPY text escapes the newlines in values) and handed to ``put``
    as a member of whole rows; returns the rows."""
    rows, pending = 0, b""
    while data := stdout.read(READ_SIZE):
        rows += data.count(b"\n")
        data = pending + data
        end = data.rfind(b"\n") + 1
        if end:
            put(data[:end])
        pending = data[end:]
    if pending:
        raise containers.DumpDamaged("psql's COPY output ends inside a row.")
    return rows


def _get(outcomes: queue.Queue, sessions: Sessions) -> Any:
    """The next outcome; raises Stopped when the sessions were cancelled from
    elsewhere (a cancelled dump), whose outcomes may never come."""
    while True:
        try:
            return outcomes.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if sessions.stopped:
                raise Stopped from None
