"""The container of a dump, written while the dump step reads it.

:func:`container` starts :class:`Writer`'s thread, which writes the tar
(:mod:`pgclone.archive.containers`) into a :class:`ContainerPipe` that the dump step reads
and compresses: pg_dump's pre-data archive; then, all at once, each copied
table's ``COPY … TO STDOUT`` (a planned table's ``COPY (SELECT …)``, a plain
dump's table as it is) and pg_dump's archive of the rest's data, their
members interleaved as they come, each stream ended by its ``end`` member;
then pg_dump's post-data archive. Three producer threads make the data
streams' members: the rest's pg_dump output; the main session, which (in a
planned dump) hands itself the scrub key, finds the kept rows
(:func:`pgclone.sharing.plans.prepare`), hands each subset table to a psql
session of its own as soon as its kept rows are final, and copies the
tables left under ``parallel_copy.PSQL_BYTES``; and ``PGCLONE_DUMP_JOBS`` psql
sessions at once that copy the bigger tables, a big one in block ranges
(:mod:`pgclone.archive.parallel_copy`), each session taking the next range
when done with one. Each method of :class:`Writer` says
which thread runs it.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from pgclone import conf
from pgclone.archive import containers, leak_proof, parallel_copy
from pgclone.exceptions import CommandFailed
from pgclone.pg import driver, postgres, programs
from pgclone.pg.driver import sql
from pgclone.sharing import leaks, planned_dump, plans, subset

JOIN_TIMEOUT = 30
POLL_SECONDS = 0.2
CAUSE_WAIT = 2  # seconds a failure that stopping the dump caused waits for its cause
QUEUE_MEMBERS = 3  # members waiting for the tar (at most 1 MiB each): a few MiB in all
SOURCE_WRITES = 2  # the tar's writes waiting for the compressor: a member and its header


def first_cause(failures: list[BaseException]) -> BaseException | None:
    """The first failure that stopped a dump, not one that stopping it caused:
    ``Stopped`` (a producer told to stop), a statement cancelled at pgclone's
    request (psql's or the main session's "canceling statement due to user
    request"), a pg_dump pgclone ended. None when there is none yet: it may be
    on its way."""
    for failure in failures:
        if not isinstance(failure, parallel_copy.Stopped) and not _cancelled(failure):
            return failure
    return None


def _cancelled(failure: BaseException) -> bool:
    """A statement cancelled by pgclone: SIGINT to psql (running a statement, in
    a COPY FROM STDIN, or between statements, which it leaves silently), the
    main session's cancel, or SIGTERM to a pg_dump (before it connected: no word)."""
    text = str(failure)
    if "due to user request" in text or "COPY from stdin failed: canceled by user" in text:
        return True
    if "pg_dump: terminated by user" in text:
        return True
    if isinstance(failure, CommandFailed) and failure.returncode == -signal.SIGTERM:
        return True
    silent = isinstance(failure, CommandFailed) and not failure.stderr_tail
    return silent and failure.returncode == 3


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
            for index, table in enumerate(planned_dump.planned_tables(plan))
        ],
    }


class ContainerPipe:
    """The container as the dump step reads it, handed over by the thread that
    writes it a few writes at a time (what a pipe would do, without copying
    every byte through the kernel twice); ``rows`` once it is all read."""

    def __init__(self, depth: int = SOURCE_WRITES) -> None:
        self.rows: dict[tuple[str, str], int] = {}
        self.proof: dict[str, Any] | None = None  # the leak proof's, once it passed
        self.pre_data_sha256: str | None = None  # of the pre-data archive, once written
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
    there too, then its end (``None``: the tar's ``end`` member)."""

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
        self._put((self._prefix, None))


@contextlib.contextmanager
def container(
    conn: postgres.ConnInfo,
    *,
    snapshot: str,
    cursor: driver.Cursor,
    plan: subset.Plan,
    config_name: str,
    started: planned_dump.Programs,
) -> Iterator[ContainerPipe]:
    """The container of a planned dump, written by a thread of its own: read
    it to its end inside the block. Raises what writing raised."""
    writer = Writer(conn, snapshot=snapshot, cursor=cursor, plan=plan, started=started)
    thread = threading.Thread(
        target=writer.write_container, args=(config_name,), name="pgclone-container", daemon=True
    )
    thread.start()
    source = writer.source
    try:
        yield source
    except BaseException:
        source.close()  # the writer stops on a broken pipe; a COPY is cancelled
        writer.stop()
        thread.join(JOIN_TIMEOUT)
        raise
    thread.join()
    source.close()
    if source.error is not None:
        raise source.error


class Writer:
    """The threads that write one container and the state they share: the
    queue of members (producers put, the container thread takes), the
    failures the producers met, the psql sessions (stopped, they stop every
    producer) and ``source``, which the dump step reads."""

    def __init__(
        self,
        conn: postgres.ConnInfo,
        *,
        snapshot: str,
        cursor: driver.Cursor,
        plan: subset.Plan,
        started: planned_dump.Programs,
    ) -> None:
        self.conn, self.snapshot, self.cursor, self.plan = conn, snapshot, cursor, plan
        self.started = started
        self.tables = list(enumerate(planned_dump.planned_tables(plan)))
        cursor.execute("SHOW server_encoding")  # the COPY text's (plans.ENCODING)
        self.encoding = cursor.fetchone()[0]
        self.source = ContainerPipe()
        self.children = programs.current_children()  # a cancelled job kills them too
        self.jobs = conf.dump_jobs()
        self.key = None if plan.copies_all else conf.scrub_key()  # a plain dump needs none
        self.creates = dict(plan.setup)  # the TEMP tables of kept rows, by table
        self.sessions = parallel_copy.Sessions()
        self.members: queue.Queue = queue.Queue(maxsize=QUEUE_MEMBERS)
        self.failures: list[BaseException] = []
        self.header = header("", plan, self.encoding)
        self.tee = leak_proof.Tee(self.header) if leaks.wanted(plan) else None

    # Any thread -------------------------------------------------------------------

    def put(self, item: tuple[str | None, Any]) -> None:
        """A member for the tar (or a producer's end: ``(None, None)``)."""
        while not self.sessions.stopped:
            with contextlib.suppress(queue.Full):
                self.members.put(item, timeout=POLL_SECONDS)
                return
        raise parallel_copy.Stopped

    def stop(self) -> None:
        if self.tee is not None:
            self.tee.stop()
        self.sessions.cancel()
        self.started.stop()  # nothing waits on their output (a pg_dump may wait for a lock)
        with contextlib.suppress(driver.Error):
            self.cursor.connection.cancel()

    # The container thread ("pgclone-container") -----------------------------------

    def write_container(self, config_name: str) -> None:
        programs.adopt_children(self.children)
        try:
            tar = containers.TarWriter(self.source.write)
            tar.json(containers.PLAN, {**self.header, "config": config_name})
            self.write_data(tar)
            self.prove()
            tar.copy(containers.POST_DATA, self.started.post_data.stdout)
            programs.ended(self.started.post_data)
            tar.close()
        except BaseException as exc:  # handed to the reading thread: what caused it, not
            self.source.error = first_cause([exc, *self.failures]) or exc  # a pg_dump stop() ended
        finally:
            self.source.end()

    def write_data(self, tar: containers.TarWriter) -> None:
        """The pre-data, then the data streams as their members come: their
        producers start first (the main session finds the kept rows while
        pg_dump writes the pre-data)."""
        counts: dict[str, int] = {}
        threads = self.start_producers()
        running = len(threads)
        failed_at = None
        try:
            pre_data = containers.Hashed(self.started.pre_data.stdout)
            tar.copy(containers.PRE_DATA, pre_data)
            programs.ended(self.started.pre_data)
            self.source.pre_data_sha256 = pre_data.hexdigest()
            while running:
                if self.failures:  # what stopped the dump, not what stopping it caused
                    failed_at = failed_at or time.monotonic()
                    cause = first_cause(self.failures)
                    if cause is not None or time.monotonic() - failed_at > CAUSE_WAIT:
                        raise cause or self.failures[0]
                try:
                    stream, data = self.members.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if stream is None:
                    running -= 1
                    continue
                if data is None:
                    tar.member(containers.end_of(stream), b"")
                    continue
                count = counts.get(stream, 0)
                tar.member(f"{stream}/{count:06d}", data)
                counts[stream] = count + 1
                if self.tee is not None:
                    self.tee.member(stream, data)
        finally:
            if running:
                self.stop()
            for thread in threads:
                thread.join(JOIN_TIMEOUT)

    def prove(self) -> None:
        """The leak proof's end, once every data member was handed to it."""
        if self.tee is not None:
            self.source.proof = self.tee.result()

    def start_producers(self) -> list[threading.Thread]:
        """The producers of the data streams, started at once (the cursor is
        this thread's until they start)."""
        driven, ranged, kept = [], [], []
        for index, table in self.tables:
            if table.reads:  # a subset's, or one with keys cut: after the kept rows
                kept.append((index, table))
                continue
            ranges = parallel_copy.ranges_of(self.cursor, table, self.jobs)
            if ranges:
                common = {"snapshot": self.snapshot, "key": self.key, "table": table}
                scripts = parallel_copy.scripts(self.cursor, ranges=ranges, **common)
                ranged.append((index, table, scripts))
            else:
                driven.append((index, table))
        threads = [
            threading.Thread(target=self.produce, args=args, name=f"pgclone-{name}", daemon=True)
            for name, args in (
                ("rest", (self.copy_rest,)),
                ("copy", (self.copy_in_main_session, driven, kept)),
                ("copy-ranges", (self.copy_in_ranges, ranged)),
            )
        ]
        for thread in threads:
            thread.start()
        return threads

    # Each producer thread ------------------------------------------------------------

    def produce(self, work: Any, *args: Any) -> None:
        programs.adopt_children(self.children)
        try:
            work(*args)
        except BaseException as exc:  # raised by the thread writing the tar
            self.failures.append(exc)
            self.stop()
            return
        with contextlib.suppress(parallel_copy.Stopped):
            self.put((None, None))

    # The rest's producer ("pgclone-rest") ----------------------------------------------

    def copy_rest(self) -> None:
        stream = _Stream(self.put, containers.REST)
        while data := self.started.rest.stdout.read(containers.MEMBER_SIZE):
            stream.member(data)
        programs.ended(self.started.rest)  # a pg_dump that failed stops the others at once
        stream.close()

    # The main session's producer ("pgclone-copy") --------------------------------------

    def copy_in_main_session(
        self,
        driven: list[tuple[int, subset.PlannedTable]],
        kept: list[tuple[int, subset.PlannedTable]],
    ) -> None:
        """The subset's kept rows, each subset table handed to a psql session (at
        most ``jobs`` at once) as soon as its kept rows are final; then, from its
        own cursor, the tables left and those scrubbed whole."""
        pending = dict(kept)
        helpers: list[parallel_copy.Helper] = []

        def on_final(final: set[int]) -> None:
            if self.sessions.stopped:  # a session failed: no statement more (its
                raise parallel_copy.Stopped  # cancel reaches only a statement running)
            for index, table in list(pending.items()):
                if set(table.reads) <= final and sum(h.running for h in helpers) < self.jobs:
                    del pending[index]
                    helpers.append(self.hand_to_psql(index, table))

        try:
            plans.prepare(self.cursor, self.plan, self.key, on_final=on_final)
            if self.tee is not None:  # the kept rows are known: their values sampled
                began = time.monotonic()
                search = leaks.Search(leaks.sample(self.cursor, self.plan))
                self.tee.start(search, time.monotonic() - began)
            for index, table in [*pending.items(), *driven]:
                if self.sessions.stopped:
                    raise parallel_copy.Stopped
                self.copy_in_cursor(index, table)
        except BaseException:
            self.stop()  # the sessions too, before they are waited for
            raise
        finally:
            for helper in helpers:
                helper.join()  # till its last member is handed on: a big table takes long

    def copy_in_cursor(self, index: int, table: subset.PlannedTable) -> None:
        stream = _Stream(self.put, containers.table_prefix(index))
        rows = containers.RowMembers(stream.member)
        count = driver.copy_out(self.cursor, table.copy_statement(), rows.write)
        rows.close()
        stream.close()
        self.source.rows[table.schema, table.name] = count

    def hand_to_psql(self, index: int, table: subset.PlannedTable) -> parallel_copy.Helper:
        """A subset table's COPY in a psql session of its own, its kept rows
        streamed there from the main session (COPY data: the TEMP tables are
        the main session's), while the main session goes on. The helper's
        thread runs ``done``."""
        stream = _Stream(self.put, containers.table_prefix(index))

        def done(rows: int | None, error: BaseException | None) -> None:
            if error is not None:
                if not isinstance(error, parallel_copy.Stopped):
                    self.failures.append(error)
                self.stop()
                return
            with contextlib.suppress(parallel_copy.Stopped):
                stream.close()
            self.source.rows[table.schema, table.name] = rows

        helper = parallel_copy.Helper(
            self.conn, sessions=self.sessions, put=stream.member, done=done,
            name=f"pgclone-kept-{index}",
        )  # fmt: skip
        try:
            self.send_kept_rows(helper, table)
        except BrokenPipeError:
            pass  # psql stopped: its thread says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                helper.stdin.close()
        return helper

    def send_kept_rows(self, helper: parallel_copy.Helper, table: subset.PlannedTable) -> None:
        """psql's script: the snapshot and key, each kept-rows table it reads
        (as COPY data from the main session), then the table's COPY."""
        cursor = self.cursor
        helper.stdin.write(parallel_copy.opening(cursor, self.snapshot, self.key, plans.SETTINGS))
        for oid in table.reads:  # a TID scan reads row_id only, a leaf the keys
            keep, keys = subset.keep_table(oid), oid in table.keys
            into = sql.SQL("{}" if keys else "{} (row_id)").format(keep)
            copy_in = sql.SQL("{};\nCOPY {} FROM STDIN;\n").format(self.creates[oid], into)
            helper.stdin.write(copy_in.as_string(cursor).encode())
            rows = sql.SQL("{}" if keys else "(SELECT row_id FROM {})").format(keep)
            copy_out = sql.SQL("COPY {} TO STDOUT").format(rows)
            driver.copy_out(cursor, copy_out, helper.stdin.write)  # C to C with psycopg2
            helper.stdin.write(b"\\.\n")
        helper.stdin.write(parallel_copy.closing(cursor, table.copy_statement()))

    # The ranges' producer ("pgclone-copy-ranges") -------------------------------------

    def copy_in_ranges(self, ranged: list[tuple[int, subset.PlannedTable, list[bytes]]]) -> None:
        """The tables psql sessions copy, in ``jobs`` sessions at once: each of
        their threads takes the next range (a whole table, or a block range of a
        big one; the biggest tables first) once it is done with one."""
        work: queue.SimpleQueue = queue.SimpleQueue()
        for index, table, scripts in ranged:
            copied = _Copied(table, _Stream(self.put, containers.table_prefix(index)), len(scripts))
            for script in scripts:
                work.put((copied, script))
        failures: list[BaseException] = []
        threads = [
            threading.Thread(
                target=self.copy_ranges, args=(work, failures), name=f"pgclone-ranges-{n}",
                daemon=True,
            )
            for n in range(min(self.jobs, work.qsize()))
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise first_cause(failures) or failures[0]

    # Each range thread ("pgclone-ranges-N") ------------------------------------------

    def copy_ranges(self, work: queue.SimpleQueue, failures: list[BaseException]) -> None:
        """Ranges copied one after another, each by a psql session, until none
        is left; a table's stream ends with its last range. A failure stops
        every session."""
        programs.adopt_children(self.children)
        try:
            while True:
                try:
                    copied, script = work.get_nowait()
                except queue.Empty:
                    return
                rows = parallel_copy.copy_table(
                    self.conn, scripts=[script], write_member=copied.stream.member,
                    sessions=self.sessions,
                )  # fmt: skip
                if copied.add(rows):
                    copied.stream.close()
                    self.source.rows[copied.table.schema, copied.table.name] = copied.rows
        except BaseException as exc:  # raised by copy_in_ranges, once all stopped
            failures.append(exc)
            self.sessions.cancel()


class _Copied:
    """A table psql sessions copy in ranges, maybe several at once: its
    stream, its rows so far and the ranges not copied yet."""

    def __init__(self, table: subset.PlannedTable, stream: _Stream, ranges: int) -> None:
        self.table, self.stream = table, stream
        self.rows = 0
        self._left = ranges
        self._lock = threading.Lock()

    def add(self, rows: int) -> bool:
        """A range's rows; whether it was the last range."""
        with self._lock:
            self.rows += rows
            self._left -= 1
            return self._left == 0
