"""The leak proof over a planned dump's container: its data streams searched
for the sampled values (:mod:`pgclone.sharing.leaks`) as they are written, or
as ``verify --leaks`` reads them back.

Each data stream has a sink: a planned table's COPY text (:class:`CopySink`),
or the rest's pg_dump archive (:class:`RestSink`, which reads its table of
contents to name the tables). The pre-data and post-data archives hold no
rows. During a dump, :class:`Tee` hands the members the container's thread
writes to a thread of its own (the search releases the interpreter's lock),
through a short queue: the dump waits for the proof only when the search is
slower than the data, and at the end.
"""

from __future__ import annotations

import bisect
import contextlib
import queue
import threading
import time
from typing import Any

from pgclone.archive import containers, custom_archive, planned_restore
from pgclone.exceptions import LeakFound
from pgclone.sharing import leaks

MOST_HITS = 1000  # the dump fails anyway: the search stops there
POLL_SECONDS = 0.2
QUEUE_MEMBERS = 4


class CopySink:
    """A planned table's COPY text, in pieces of any size: whole rows searched."""

    def __init__(self, proof: Proof, table: str, columns: list[str]) -> None:
        self._proof, self._table, self._columns = proof, table, columns
        self._carry = b""

    def write(self, data: bytes) -> None:
        buffer = self._carry + data if self._carry else data
        end = buffer.rfind(b"\n") + 1
        self._carry = buffer[end:]
        if end:
            rows = buffer[:end] if end < len(buffer) else buffer
            for origin, at in self._proof.search.find(rows):
                column = leaks.copy_column(rows, at, self._columns)
                self._proof.found.add((self._table, column), origin)

    def close(self) -> None:
        if self._carry:
            self.write(b"\n")

    abort = close


class RestSink:
    """The rest's pg_dump archive: its table of contents read first, then its
    blocks searched up to their last newline (no needle holds one), with the
    entries' starts found on the way (``custom_archive.entry_marker``).
    Offsets count from the archive's first byte."""

    def __init__(self, proof: Proof) -> None:
        self._proof = proof
        self._head = b""
        self._contents: custom_archive.Contents | None = None
        self._carry, self._base = b"", 0  # the rows not searched yet, and their offset
        self._tail, self._end = b"", 0  # the last bytes read, and the offset after them
        self._starts: list[int] = []  # each data entry's offset, and its dump id
        self._ids: list[int] = []

    def write(self, data: bytes) -> None:
        if self._contents is None:
            self._head += data
            try:
                self._contents = custom_archive.read_contents(self._head)
            except custom_archive.Short:
                return
            start = self._contents.data_start
            data, self._head = self._head[start:], b""
            self._base = self._end = start
            self._entry(start, data[2 : 2 + self._contents.int_size])  # [1][sign][id]
        self._markers(data)
        self._search(data)

    def _entry(self, offset: int, dump_id: bytes) -> None:
        if not self._starts or offset > self._starts[-1]:
            self._starts.append(offset)
            self._ids.append(int.from_bytes(dump_id, "little"))

    def _markers(self, data: bytes) -> None:
        size = self._contents.int_size
        marker = custom_archive.entry_marker(size)
        window, base = self._tail + data, self._end - len(self._tail)
        at = window.find(marker)
        while at >= 0 and at + len(marker) + 1 + size <= len(window):
            begin = at + len(marker) - 1  # the block type, then the id
            self._entry(base + begin, window[begin + 2 : begin + 2 + size])
            at = window.find(marker, at + 1)
        self._tail = window[-(len(marker) + 1 + size) :]
        self._end += len(data)

    def _search(self, data: bytes) -> None:
        buffer = self._carry + data
        end = buffer.rfind(b"\n") + 1
        if end:
            rows = buffer[:end]
            for origin, at in self._proof.search.find(rows):
                self._proof.found.add(self._where(rows, at), origin)
        keep = max(0, end - 1 - self._contents.int_size)  # a header: no needle fits in it
        self._base += keep
        self._carry = buffer[keep:]

    def _where(self, rows: bytes, at: int) -> tuple[str, str]:
        index = bisect.bisect_right(self._starts, self._base + at) - 1
        entry = self._contents.entries.get(self._ids[index]) if index >= 0 else None
        if entry is None:
            return ("the dump's other data", "?")
        start = custom_archive.row_start(rows, at, self._contents.int_size)
        if start is None:
            return (entry.table, "?")
        return (entry.table, leaks.copy_column(rows[start:], at - start, entry.columns))

    def close(self) -> None:
        pass

    abort = close


class Proof:
    """One search over one container's data, and what it found."""

    def __init__(self, search: leaks.Search) -> None:
        self.search = search
        self.found = leaks.Found()

    @property
    def full(self) -> bool:
        return sum(self.found.hits.values()) >= MOST_HITS

    def open_stream(self, stream: str, table: dict[str, Any] | None) -> Any:
        """The sink of a container's stream (``Router``'s ``open_stream``)."""
        if table is not None:
            label = f"{table['schema']}.{table['name']}"
            return CopySink(self, label, list(table["columns"]))
        if stream == containers.REST:
            return RestSink(self)
        return planned_restore.Discard()


class Tee:
    """The proof during a dump: the container's thread hands it each data
    member (``member``), a thread of its own searches them once ``start``
    gave it the search. ``finish`` waits for the end; ``waited`` is the time
    the dump waited for the proof."""

    def __init__(self, header: dict[str, Any]) -> None:
        self._tables = {table["member"]: table for table in header["tables"]}
        self._items: queue.Queue = queue.Queue(maxsize=QUEUE_MEMBERS)
        self._proof: Proof | None = None
        self._ready = threading.Event()
        self._stopped = False
        self._sinks: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.waited = 0.0
        self.searching = 0.0  # the search thread's own time
        self._thread = threading.Thread(target=self._run, name="pgclone-leaks", daemon=True)
        self._thread.start()

    def start(self, search: leaks.Search, sampling: float) -> None:
        """The search, sampled in ``sampling`` seconds: the members wait till now."""
        self._proof = Proof(search)
        self.waited += sampling
        self._ready.set()

    def member(self, stream: str, data: bytes) -> None:
        """A member of a data stream (its prefix: ``rest``, ``data/0001``), from
        the container's thread."""
        began = time.monotonic()
        self._put((stream, data))
        self.waited += time.monotonic() - began

    def _put(self, item: Any) -> None:
        while not self._stopped:
            with contextlib.suppress(queue.Full):
                self._items.put(item, timeout=POLL_SECONDS)
                return

    def stop(self) -> None:
        self._stopped = True
        self._ready.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._items.get_nowait()

    def finish(self) -> Proof:
        """Wait for the search of every member handed over; its proof."""
        began = time.monotonic()
        self._put(None)
        self._thread.join()
        self.waited += time.monotonic() - began
        if self.error is not None:
            raise self.error
        return self._proof

    def result(self) -> dict[str, Any]:
        """:meth:`finish`, then what the job records of the proof; raises LeakFound,
        naming where, when it found a sampled value."""
        proof = self.finish()
        if proof.found.hits:
            raise LeakFound(proof.found.message("The scrubbed dump"))
        return {
            "sample": proof.search.size,
            "columns": proof.search.columns,
            "result": "passed",
            "seconds": round(self.waited, 3),
            "search_seconds": round(self.searching, 3),
        }

    def _run(self) -> None:
        self._ready.wait()
        try:
            while not self._stopped:
                try:
                    item = self._items.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if item is None:
                    break
                began = time.monotonic()
                self._search(*item)
                self.searching += time.monotonic() - began
            for sink in self._sinks.values():
                sink.close()
        except BaseException as exc:  # raised by finish()
            self.error = exc
            self.stop()

    def _search(self, stream: str, data: bytes) -> None:
        if self._proof.full:
            return
        if stream not in self._sinks:
            self._sinks[stream] = self._proof.open_stream(stream, self._tables.get(stream))
        self._sinks[stream].write(data)
