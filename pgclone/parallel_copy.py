"""Copying one big scrubbed table in several sessions at once.

The scrub rules run in the server, row by row, and one backend uses one
CPU: a scrubbed table's COPY is bound by it. A *whole* planned table (scrubbed,
no part of a subset, so it needs none of the main session's TEMP tables)
whose heap is at least ``MIN_BYTES`` is split into block ranges, each read
by ``COPY (SELECT … WHERE t.ctid >= … AND t.ctid < …) TO STDOUT`` (a TID
Range Scan, PostgreSQL 14+) in a session of its own that imported the dump's
snapshot and holds the scrub key. Every tuple lives in one block, so the
ranges hold each row of the snapshot once.

Each session cuts its rows into members of whole rows
(:class:`pgclone.containers.RowMembers`) and puts them on a bounded queue;
the thread writing the container writes them to the table's stream as they
come, so memory stays flat. The first failure cancels the other sessions and
is raised once they all stopped.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pgclone import containers, driver, plans, postgres, subset, table_counts
from pgclone.driver import sql

MIN_BYTES = 64 * 1024 * 1024
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
    def running(self, connection: Any) -> Iterator[None]:
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


def ranges_of(cursor: Any, table: subset.PlannedTable, jobs: int) -> list[Range]:
    """The ranges ``table`` is copied in, one session each; none when one session
    copies it (one job, a subset table, a small heap, a server before 14)."""
    if jobs < 2 or table.kind != "whole":
        return []
    cursor.execute(
        "SELECT pg_relation_size(%s::oid::regclass), current_setting('block_size')::bigint, "
        "current_setting('server_version_num')::int",
        [table.oid],
    )
    size, block_size, server = cursor.fetchone()
    if size < MIN_BYTES or server < MIN_SERVER:
        return []
    ranges = block_ranges(size // block_size, jobs)
    return ranges if len(ranges) > 1 else []


def range_copy_statement(table: subset.PlannedTable, first: int, end: int | None) -> sql.Composable:
    """``table.copy_statement()`` of the rows in blocks ``first`` to ``end`` (excluded)."""
    where = sql.SQL("t.ctid >= {}::tid").format(sql.Literal(f"({first},0)"))
    if end is not None:
        below = sql.SQL("t.ctid < {}::tid").format(sql.Literal(f"({end},0)"))
        where = sql.SQL("{} AND {}").format(where, below)
    return sql.SQL("COPY ({} WHERE {}) TO STDOUT").format(table.select, where)


def copy_table(
    conn: postgres.ConnInfo,
    *,
    snapshot: str,
    key: str,
    table: subset.PlannedTable,
    ranges: list[Range],
    write_member: Callable[[bytes], Any],
    sessions: Sessions,
) -> int:
    """Copy each range of ``table`` in a session of its own, all at once, handing
    each member of whole rows to ``write_member`` as it comes; returns the rows.
    Raises the first failure once every session has stopped."""
    outcomes: queue.Queue = queue.Queue(maxsize=2 * len(ranges))
    threads = [
        threading.Thread(
            target=_copy_range,
            args=(conn, snapshot, key, range_copy_statement(table, *bounds), outcomes, sessions),
            name=f"pgclone-copy-{number}",
            daemon=True,
        )
        for number, bounds in enumerate(ranges)
    ]
    for thread in threads:
        thread.start()
    rows, running = 0, len(threads)
    try:
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
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
    return rows


def _copy_range(
    conn: postgres.ConnInfo,
    snapshot: str,
    key: str,
    statement: sql.Composable,
    outcomes: queue.Queue,
    sessions: Sessions,
) -> None:
    """One session's COPY: its members, then its rows or its failure, on ``outcomes``."""

    def put(item: Any) -> None:
        while not sessions.stopped:
            with contextlib.suppress(queue.Full):
                outcomes.put(item, timeout=POLL_SECONDS)
                return
        raise Stopped

    try:
        with (
            table_counts.snapshot_transaction(conn, snapshot) as cursor,
            sessions.running(cursor.connection),
        ):
            plans.set_key(cursor, key)
            members = containers.RowMembers(put)
            if sessions.stopped:  # a cancel sent before the COPY started misses it
                raise Stopped
            outcome: Any = driver.copy_out(cursor, statement, members.write)
            members.close()
    except BaseException as exc:  # handed to the writing thread
        outcome = exc
    with contextlib.suppress(Stopped):
        put(outcome)


def _get(outcomes: queue.Queue, sessions: Sessions) -> Any:
    """The next outcome; raises Stopped when the sessions were cancelled from
    elsewhere (a cancelled dump), whose outcomes may never come."""
    while True:
        try:
            return outcomes.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if sessions.stopped:
                raise Stopped from None
