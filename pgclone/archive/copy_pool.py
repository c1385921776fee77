"""Loading a container's table rows in several sessions at once.

Every member of a table's stream in a ``pgclone-container-3`` container holds
whole COPY rows (:class:`pgclone.archive.containers.RowMembers`), so any
session can load any member, in any order. :class:`CopyPool` runs
``PGCLONE_RESTORE_JOBS`` sessions, each a thread with a connection of its own
(its ``search_path`` pinned, as every session pgclone opens). The thread
reading the dump hands each member, once all of it has come, to
:meth:`CopyPool.put`; a free session takes it and loads it with ``COPY …
FROM STDIN``, and takes on the next members while they are of the same table
as one COPY (one statement for a run of a table's members). Members of one
table may load in two sessions at once: that is how one huge table uses
every core.

The queue between them is bounded (``QUEUE_PER_SESSION`` members a session):
the reader blocks while the sessions are busy, so memory stays about jobs times
``MEMBER_SIZE`` times a few, whatever the database's size.

The first failure stops everything: sessions in a COPY abort it (their
rows are rolled back with it), the others stop taking members, statements
running on the server are cancelled, and the next :meth:`CopyPool.put`
raises it, which stops the reader.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from typing import Any

from pgclone.archive import parallel_copy
from pgclone.pg import driver, postgres, programs
from pgclone.pg.driver import sql
from pgclone.sharing import plans

QUEUE_PER_SESSION = 2  # members waiting for a session, per session
POLL_SECONDS = 0.2  # how soon a waiting side notices a failure
JOIN_TIMEOUT = 30


class Stopped(Exception):
    """The load was stopped: another session failed, or the restore did."""


@dataclass(frozen=True)
class Member:
    """One member of a table's stream: whole COPY rows."""

    table: dict[str, Any]
    data: bytes


def copy_in_statement(table: dict[str, Any]) -> sql.Composable:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table["schema"], table["name"]),
        sql.SQL(", ").join(map(sql.Identifier, table["columns"])),
    )


def copy_settings(cursor: driver.Cursor, plan: dict[str, Any]) -> None:
    """The settings the COPY text was written with (plans.COPY_TEXT), and the
    encoding ``plan.json`` records: the source database's (older containers
    don't say, and keep the session's)."""
    settings = [*plans.COPY_TEXT]
    if isinstance(plan.get("encoding"), str):
        settings.append(("client_encoding", plan["encoding"]))
    for statement in plans.set_statements(settings, local=False):
        cursor.execute(statement)


class CopyPool:
    """``jobs`` sessions loading the members handed to :meth:`put` into
    ``target``. ``rows``, ``loaded`` (bytes of COPY text sent) and ``used``
    (sessions that loaded any) once :meth:`close` returns."""

    def __init__(self, target: postgres.ConnInfo, plan: dict[str, Any], jobs: int) -> None:
        self.jobs = max(1, jobs)
        self._target = target
        self._plan = plan
        self._queue: queue.Queue[Member | None] = queue.Queue(self.jobs * QUEUE_PER_SESSION)
        self._stop = threading.Event()
        self._sessions = parallel_copy.Sessions()
        self._failures: list[BaseException] = []
        self._rows = [0] * self.jobs
        self._bytes = [0] * self.jobs
        children = programs.current_children()  # a cancelled job cancels their statements
        self._threads = [
            threading.Thread(
                target=self._run_session,
                args=(slot, children),
                name=f"pgclone-copy-in-{slot}",
                daemon=True,
            )
            for slot in range(self.jobs)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def loaded(self) -> int:
        """Bytes of COPY text sent so far, by every session (read from any thread)."""
        return sum(self._bytes)

    @property
    def rows(self) -> int:
        return sum(self._rows)

    @property
    def used(self) -> int:
        return sum(1 for sent in self._bytes if sent)

    # The reading thread's ----------------------------------------------------

    def put(self, member: Member) -> None:
        """Hand ``member`` to the next free session; blocks while all are busy
        and the queue is full. Raises the first session's failure."""
        while True:
            self._raise_failure()
            with contextlib.suppress(queue.Full):
                self._queue.put(member, timeout=POLL_SECONDS)
                return

    def close(self) -> None:
        """Once every member was put: wait until they are all loaded; raise the
        first failure."""
        for _ in self._threads:
            while True:
                self._raise_failure()
                with contextlib.suppress(queue.Full):
                    self._queue.put(None, timeout=POLL_SECONDS)
                    break
        for thread in self._threads:
            thread.join()
        self._raise_failure()

    def abort(self) -> None:
        """Stop every session (their COPYs are rolled back) and wait for them."""
        self._stop.set()
        self._sessions.cancel()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)

    def _raise_failure(self) -> None:
        if self._failures:
            raise self._failures[0]
        if self._stop.is_set():
            raise Stopped("The restore's COPY sessions were stopped.")

    # Each session's thread -----------------------------------------------------

    def _run_session(self, slot: int, children: set[Any]) -> None:
        programs.adopt_children(children)
        try:
            with (
                postgres.connect(self._target) as connection,
                self._sessions.running(connection),
                programs.session_among_children(connection),
                connection.cursor() as cursor,
            ):
                copy_settings(cursor, self._plan)
                member = self._take()
                while member is not None:
                    member = self._copy_run(slot, cursor, member)
        except BaseException as exc:
            if not self._stop.is_set():
                self._failures.append(exc)
            self._stop.set()

    def _take(self) -> Member | None:
        """The next member; None once there are no more. Raises Stopped."""
        while True:
            if self._stop.is_set():
                raise Stopped("The restore's COPY sessions were stopped.")
            with contextlib.suppress(queue.Empty):
                return self._queue.get(timeout=POLL_SECONDS)

    def _copy_run(self, slot: int, cursor: driver.Cursor, first: Member) -> Member | None:
        """One COPY of ``first`` and the members after it of the same table;
        returns the first member of another table (None: the end)."""
        run = _Run(self, slot, first)
        self._rows[slot] += driver.copy_from(cursor, copy_in_statement(first.table), run)
        return run.next


class _Run:
    """The readable a session's COPY reads: ``first``'s rows, then those of the
    members the session takes after it while they are the same table's. The
    member of another table that ends it is kept in ``next``.

    Each read returns a whole member, whatever size was asked for: both
    drivers send what ``read`` returns as it is, so a member's bytes go to
    the server without another copy of them in this process."""

    def __init__(self, pool: CopyPool, slot: int, first: Member) -> None:
        self._pool = pool
        self._slot = slot
        self._table = first.table
        self._data = first.data
        self._ended = False
        self.next: Member | None = None

    def read(self, size: int = -1) -> bytes:
        data, self._data = self._data, b""
        while not data:
            if self._ended:
                return b""
            member = self._pool._take()  # Stopped, raised here, aborts the COPY
            if member is None or member.table is not self._table:
                self.next, self._ended = member, True
                return b""
            data = member.data
        self._pool._bytes[self._slot] += len(data)
        return data


class TableFeed:
    """A table's stream as the Router hands it over: each member's bytes
    gathered until the member has all come (``member_ended``), then put on
    the pool. A member cut short by a truncated dump never reaches a session."""

    def __init__(self, pool: CopyPool, table: dict[str, Any]) -> None:
        self._pool = pool
        self._table = table
        self._pieces: list[bytes] = []  # the member's, as the container's reader cut them

    def write(self, data: bytes) -> None:
        self._pieces.append(data)

    def member_ended(self) -> None:
        pieces, self._pieces = self._pieces, []
        if pieces:  # join hands back a member that came in one piece as it is
            self._pool.put(Member(self._table, b"".join(pieces)))

    def close(self) -> None:
        """The stream's end member came: its members were all put."""

    def abort(self) -> None:
        self._pieces.clear()
