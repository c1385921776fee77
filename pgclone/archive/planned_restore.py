"""Restoring a dump's container (:mod:`pgclone.archive.containers`), and reading
it for ``verify``.

The streams arrive in restore order, and each goes where a restore needs it
as it arrives: the pre-data archive to ``pg_restore`` (tables, types,
functions; no index or constraint yet); then, as they come, each table's
COPY text to ``COPY … FROM STDIN`` in a session of its own (ended at the
stream's ``end`` member) and the rest's data archive to ``pg_restore`` (the
other tables' rows, sequences, large objects); then the post-data archive to
``pg_restore``: indexes and constraints, which check every foreign key once
all the rows are in. (A ``pgclone-plan-2`` container has no ``end``
members: its data streams end when the post-data starts; a
``pgclone-plan-1`` container has its streams one after another, its rest
archive last, with the post-data.) That is how containers of those two older
formats are restored; a ``pgclone-container-3`` container's rows load in
several sessions at once (:mod:`pgclone.archive.parallel_restore`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pgclone.archive import containers, copy_pool, restore_lists, streams
from pgclone.exceptions import DumpDamaged
from pgclone.pg import driver, extensions, postgres, programs
from pgclone.storage.local import open_private


def copy_from(
    cursor: driver.Cursor, table: dict[str, Any], source: Any, plan: dict[str, Any]
) -> int:
    """A planned table's COPY text into it, read with the settings it was written
    with (:func:`pgclone.archive.copy_pool.copy_settings`); its rows."""
    copy_pool.copy_settings(cursor, plan)
    return driver.copy_from(cursor, copy_pool.copy_in_statement(table), source)


class ProgramSink:
    """Writes a stream to the stdin of one program or more (pg_restore); one
    that stops reading early says why by its exit status, on ``close``."""

    def __init__(self, argvs: list[tuple[list[str], Any]], env: dict[str, str]) -> None:
        self._stack = contextlib.ExitStack()
        self._procs = [
            self._stack.enter_context(
                programs.spawn(argv, env=env, stdin=subprocess.PIPE, stdout=stdout)
            )
            for argv, stdout in argvs
        ]
        self._tee = streams.Tee(self._procs)
        self.write = self._tee.write

    def close(self) -> None:
        self._tee.close()
        self._stack.close()  # waits for each; raises CommandFailed for one that failed

    def abort(self) -> None:
        for proc in self._procs:
            proc.kill()
        with contextlib.suppress(Exception):
            self.close()


class CopySink:
    """A planned table's COPY text into ``COPY … FROM STDIN``, run in a thread
    and a session of its own (the tables' streams come at once) that reads
    from a pipe."""

    def __init__(
        self, target: postgres.ConnInfo, table: dict[str, Any], plan: dict[str, Any]
    ) -> None:
        read_end, write_end = os.pipe()
        self._pipe = os.fdopen(write_end, "wb")
        self.rows = 0
        self._error: BaseException | None = None

        def run() -> None:
            try:
                with (
                    os.fdopen(read_end, "rb") as source,
                    postgres.connect(target) as connection,
                    connection.cursor() as cursor,
                ):
                    self.rows = copy_from(cursor, table, source, plan)
            except BaseException as exc:  # raised again by close()
                self._error = exc

        self._thread = threading.Thread(target=run, name="pgclone-copy-in", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        with contextlib.suppress(BrokenPipeError):  # COPY stopped: close() says why
            self._pipe.write(data)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._pipe.close()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class FileSink:
    """A stream unpacked to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open_private(path)  # owner-only: closed by close or abort
        self.write = self._file.write

    def close(self) -> None:
        self._file.close()

    abort = close


class Router:
    """Parses the container handed to ``write`` and routes each stream's members
    to a sink of its own (``open_stream(name, table)``, ``table`` for a
    table's stream), as they come.

    The data streams (the tables' and ``rest``) are open at once, their
    members interleaved; the pre-data's sink is closed when the first of them
    starts. In a ``pgclone-container-3`` container each data stream's sink is
    closed at its ``end`` member (every one must have come when ``post-data``
    starts); in a ``pgclone-plan-2`` container, all of them when
    ``post-data`` starts. In a ``pgclone-plan-1`` container each stream is
    whole, so its sink is closed when the next stream starts. A stream that
    starts again once closed, or that comes after a later phase began, is
    damage.

    A sink's failure stops the routing, not the reading: the dump is still read
    to its end so that its checksums are checked first (``finish`` raises it);
    with ``stop_reading`` it is raised at once, which stops the reading too (a
    parallel restore does not read on through a dump it can't restore).

    A sink may have ``member_ended()``: called once each of its members has
    all come."""

    def __init__(
        self,
        open_stream: Callable[[str, dict[str, Any] | None], Any],
        *,
        stop_reading: bool = False,
    ) -> None:
        self.plan: dict[str, Any] | None = None
        self.streams: list[str] = []
        self._open = open_stream
        self._stop_reading = stop_reading
        self._current: Any = None  # the sink of the member being read
        self._plan_bytes = bytearray()
        self._sinks: dict[str, Any] = {}  # the open ones, in the order they opened
        self._chunks: dict[str, int] = {}  # each stream's members so far
        self._ended: set[str] = set()  # the data streams whose end member came
        self._phase = 0
        self._failed: BaseException | None = None
        self._reader = containers.TarReader(self._member, self._member_ended)

    def write(self, data: bytes) -> None:
        if self._failed is not None:
            return
        try:
            self._reader.write(data)
            if self._reader.ended:
                # In the thread that started the programs: they die with it (pdeathsig).
                self._close_sinks()
        except DumpDamaged:
            raise
        except BaseException as exc:
            if self._stop_reading:
                raise
            self._failed = exc
            self.abort()

    def _member_ended(self) -> None:
        ended = getattr(self._current, "member_ended", None)
        if ended is not None:
            ended()

    def _member(self, name: str) -> Callable[[bytes], Any]:
        self._current = None
        stream = containers.stream_of(name)
        if name == containers.PLAN and not self.streams:
            return self._plan_bytes.extend
        if self.plan is None:
            self.plan = containers.read_plan(bytes(self._plan_bytes))
        if name == containers.end_of(stream) and self.plan["format"] == containers.FORMAT:
            return self._end(stream)
        count = self._chunks.get(stream, 0)
        if name != f"{stream}/{count:06d}":  # a member missing, repeated or out of order
            raise DumpDamaged(
                f"The dump is damaged: member {name!r} comes where {stream}/{count:06d} should."
            )
        self._chunks[stream] = count + 1
        if stream in self._sinks:
            self._current = self._sinks[stream]
            return self._current.write
        tables = {t["member"]: t for t in self.plan["tables"]}
        phase = self._phase_of(stream, tables)
        if stream in self.streams or phase < self._phase:
            raise DumpDamaged(f"The dump is damaged: member {name!r} comes out of order.")
        if phase == 3 and self.plan["format"] == containers.FORMAT:
            self._require_ended()
        if phase > self._phase or self.plan["format"] == containers.LEGACY_FORMAT:
            self._close_sinks()
        self._phase = phase
        self.streams.append(stream)
        self._sinks[stream] = self._current = self._open(stream, tables.get(stream))
        return self._current.write

    def _end(self, stream: str) -> Callable[[bytes], Any]:
        """A data stream's ``end`` member: its sink is closed (it must be open)."""
        if stream not in self._sinks or self._phase != 2:
            raise DumpDamaged(f"The dump is damaged: {stream!r} ends where it is not open.")
        self._sinks.pop(stream).close()
        self._ended.add(stream)
        return _empty

    def _require_ended(self) -> None:
        for stream in self.streams:
            if stream != containers.PRE_DATA and stream not in self._ended:
                raise DumpDamaged(
                    f"The dump is damaged: stream {stream!r} has no end member before the "
                    "post-data."
                )

    def _phase_of(self, stream: str, tables: dict[str, Any]) -> int:
        """Where ``stream`` comes: the streams of a later phase start once the
        earlier ones have ended."""
        legacy = self.plan["format"] == containers.LEGACY_FORMAT
        if stream == containers.PRE_DATA:
            return 1
        if stream in tables or (stream == containers.REST and not legacy):
            return 2
        if stream == containers.REST or (stream == containers.POST_DATA and not legacy):
            return 3
        raise DumpDamaged(f"The dump is damaged: unexpected stream {stream!r}.")

    def _close_sinks(self) -> None:
        while self._sinks:
            stream = next(iter(self._sinks))
            self._sinks.pop(stream).close()

    def finish(self) -> None:
        """Once the dump is all read and checked: the last sinks closed, and the
        first failure raised."""
        if self._failed is not None:
            raise self._failed
        try:
            self._reader.close()  # a tar stream cut short: the sinks still wait for more
            self._close_sinks()
        except BaseException:
            self.abort()
            raise
        if self.plan is None and self._plan_bytes:  # nothing came after it
            self.plan = containers.read_plan(bytes(self._plan_bytes))
        if self.plan is None:
            raise DumpDamaged(f"The dump is damaged: its container has no {containers.PLAN}.")
        needed = [containers.PRE_DATA, containers.REST]
        if self.plan["format"] != containers.LEGACY_FORMAT:
            needed.append(containers.POST_DATA)
        needed += [table["member"] for table in self.plan["tables"]]
        for stream in needed:  # each is written, even empty
            if stream not in self.streams:
                raise DumpDamaged(f"The dump is damaged: its container has no {stream!r} stream.")

    def abort(self) -> None:
        sinks, self._sinks = list(self._sinks.values()), {}
        for sink in sinks:
            sink.abort()


def _empty(data: bytes) -> None:
    """An ``end`` member's bytes: there are none."""
    if data:
        raise DumpDamaged("The dump is damaged: an end member holds bytes.")


def read(router: Router, source: Any, checks: dict[str, Any]) -> None:
    try:
        streams.decompress(source, router.write, **checks)
    except BaseException:
        router.abort()
        raise
    router.finish()


def restore_streamed(
    source: Any,
    target: postgres.ConnInfo,
    checks: dict[str, Any],
    installed: extensions.Installed | None = None,
) -> int:
    """Restore the container read from ``source`` into ``target`` as it streams;
    ``checks``: ``streams.decompress``'s checksums, sizes, identities and
    progress; ``installed``: what ``target`` holds already (looked up when not
    given). Returns the planned tables' rows restored."""
    edit = (installed or extensions.Installed.inspect(target)).edit
    children = programs.current_children()  # the sinks start in the writing thread
    copies: list[CopySink] = []

    def open_stream(stream: str, table: dict[str, Any] | None) -> Any:
        programs.adopt_children(children)
        if table is None:
            argv = postgres.pg_restore_argv(target)
            return restore_lists.ListedSink(argv, target.env(), edit)
        copies.append(CopySink(target, table, router.plan))
        return copies[-1]

    router = Router(open_stream)
    read(router, source, checks)
    return sum(copy.rows for copy in copies)


def read_archives(
    source: Any, readers: Iterable[tuple[list[str], Any]], checks: dict[str, Any]
) -> dict[str, Any]:
    """Feed each pg_dump archive of the container (pre-data, rest, post-data) to
    every reader (``pg_restore --list`` …, writing where its pair says) in
    turn; returns the plan."""
    readers = list(readers)

    def open_stream(stream: str, table: dict[str, Any] | None) -> Any:
        if table is not None:
            return Discard()
        if stream == containers.POST_DATA:  # which lists the pre-data's entries too
            return ProgramSink(
                [([*argv, "--section=post-data"], out) for argv, out in readers],
                programs.child_environment(),
            )
        return ProgramSink(readers, programs.child_environment())

    router = Router(open_stream)
    read(router, source, checks)
    return router.plan


class Discard:
    """A stream's rows, read (and checked) but not needed."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    abort = close
