"""The container of every dump: a tar stream.

Each table's rows come from ``COPY … TO STDOUT`` in pgclone's own sessions,
several at once in the dump's snapshot (a plain dump's tables as they are, a
planned dump's scrubbed and/or subset tables as its plan selects them). So a
dump is a tar stream (format ``pgclone-container-3``) whose streams come in
the order a restore needs them, so that one pass over it restores it:

- ``plan.json``: the tables whose rows are members (schema, name, columns,
  member prefix), the config and, for a planned dump, the plan's digest;
- ``pre-data/NNNNNN``: ``pg_dump --format=custom --section=pre-data``;
- ``data/TTTT/NNNNNN``: the COPY text of table ``TTTT``, and
  ``rest/NNNNNN``: ``pg_dump --format=custom --section=data`` without those
  tables' rows (the other tables' rows: a planned dump's tables it writes
  as they are, tables of extensions; sequences' values, large objects); the
  members of these streams are interleaved, in the order they were
  produced (all at once), and each of them ends with an empty member
  ``data/TTTT/end`` or ``rest/end``, so that a restore ends that table's
  COPY (and its session) there, not once every table's rows are in;
- ``post-data/NNNNNN``: ``pg_dump --format=custom --section=pre-data
  --section=post-data``, once every data stream has ended, restored with
  ``--section=post-data``: its pre-data entries are there so that
  ``pg_restore --jobs`` knows the tables each foreign key locks (dumps
  made before they were there have ``--section=post-data`` alone, and their
  post-data is restored with one job).

tar needs each member's size before its bytes, so a stream is written as
consecutive members of at most about ``MEMBER_SIZE`` bytes, numbered per
stream (``cat pre-data/*`` gives the archive back). A pg_dump archive may be
cut anywhere; a COPY stream is cut into members of whole rows
(:class:`RowMembers`; a row longer than ``MEMBER_SIZE`` is a member of its
own), because a planned table's COPY may come from several sessions at once
(block ranges of one big table, :mod:`pgclone.archive.parallel_copy`) whose members
are written in whatever order they come. The restore concatenates them into
one COPY, which takes rows in any order. Both ends hold a few members in
memory.

Older formats, still restored: ``pgclone-plan-2``, planned dumps only,
the same members without the ``end`` ones (its data streams end when
``post-data`` starts); ``pgclone-plan-1`` had each stream's members
together, and no ``post-data``: its ``rest`` came last, with ``--section=data
--section=post-data``. A plain dump was one ``pg_dump --format=custom``
archive (``postgresql-custom``).

The format was renamed rather than numbered ``pgclone-plan-3``: it is no
longer a planned dump's alone. The number goes on from the plan formats; a
worker older than it refuses it in ``fetch``, naming it, as it refuses any
format it doesn't know.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable
from typing import Any

from pgclone.exceptions import DumpDamaged, PgCloneError

FORMAT = "pgclone-container-3"
PLAN_FORMAT = "pgclone-plan-2"
LEGACY_FORMAT = "pgclone-plan-1"
FORMATS = (LEGACY_FORMAT, PLAN_FORMAT, FORMAT)
CUSTOM = "postgresql-custom"  # one pg_dump archive: plain dumps made before the container
READABLE = (CUSTOM, *FORMATS)
MEMBER_SIZE = 1024 * 1024
BLOCK = tarfile.BLOCKSIZE
PLAN = "plan.json"
PRE_DATA = "pre-data"
REST = "rest"
POST_DATA = "post-data"
END = "end"  # the last member of a data stream, empty (FORMAT)


def table_prefix(index: int) -> str:
    return f"data/{index:04d}"


def end_of(stream: str) -> str:
    return f"{stream}/{END}"


def refuse_unknown(format_name: str, what: str) -> None:
    """Raise PgCloneError, naming the format, unless this pgclone reads it."""
    if format_name not in READABLE:
        raise PgCloneError(
            f"{what} is of format {format_name!r}, which this pgclone can't read (it reads "
            f"{', '.join(READABLE)}): upgrade pgclone on the workers."
        )


def stream_of(member: str) -> str:
    """The stream a member belongs to: its name without the chunk number."""
    return member.rpartition("/")[0] or member


class TarWriter:
    """Writes a tar stream (USTAR, regular files) to ``write``."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self._mtime = int(time.time())

    def member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self._mtime, 0o644
        self._write(info.tobuf(tarfile.USTAR_FORMAT))
        self._write(data)
        if len(data) % BLOCK:
            self._write(bytes(BLOCK - len(data) % BLOCK))

    def json(self, name: str, value: Any) -> None:
        self.member(name, json.dumps(value, indent=1, sort_keys=True).encode())

    def stream(self, prefix: str) -> Chunks:
        return Chunks(self, prefix)

    def copy(self, prefix: str, source: Any) -> None:
        """A readable (pg_dump's stdout) to its end, as chunk members of ``prefix``."""
        chunks = self.stream(prefix)
        while data := source.read(MEMBER_SIZE):
            chunks.write(data)
        chunks.close()

    def close(self) -> None:
        """The end-of-archive marker, padded to a whole record as tar writes it."""
        self._write(bytes(tarfile.RECORDSIZE))


class Hashed:
    """A readable whose bytes are hashed (SHA-256) as they are read."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class Chunks:
    """One stream written as members ``prefix/000000``, ``prefix/000001`` …;
    at least one member, so that an empty stream is there too."""

    def __init__(self, writer: TarWriter, prefix: str) -> None:
        self._writer = writer
        self._prefix = prefix
        self._buffer = bytearray()
        self._count = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= MEMBER_SIZE:
            self._emit(bytes(self._buffer[:MEMBER_SIZE]))
            del self._buffer[:MEMBER_SIZE]

    def member(self, data: bytes) -> None:
        """``data`` as the stream's next member, as it is (after what ``write`` holds)."""
        if self._buffer:
            self._emit(bytes(self._buffer))
            self._buffer.clear()
        self._emit(data)

    def close(self) -> None:
        if self._buffer or not self._count:
            self._emit(bytes(self._buffer))
            self._buffer.clear()

    def _emit(self, data: bytes) -> None:
        self._writer.member(f"{self._prefix}/{self._count:06d}", data)
        self._count += 1


class RowMembers:
    """Cuts COPY text handed over in pieces into members of whole rows, each
    handed to ``put``: about ``MEMBER_SIZE`` bytes, never a row split between
    two (a longer row is a member of its own).

    A member is cut only after a piece that ends a row (a newline: COPY text
    escapes the newlines of values), so it holds whole rows however the
    driver splits them; both drivers hand over one row per piece.
    """

    def __init__(self, put: Callable[[bytes], Any]) -> None:
        self._put = put
        self._pieces: list[bytes] = []  # joined once per member: cheaper than one buffer
        self._size = 0

    def write(self, data: bytes) -> None:
        if self._size + len(data) > MEMBER_SIZE:
            self._cut()
        self._pieces.append(data)
        self._size += len(data)
        if self._size >= MEMBER_SIZE:
            self._cut()

    def close(self) -> None:
        """Hand over what is left (the last rows)."""
        if self._pieces:
            self._put(b"".join(self._pieces))
            self._pieces, self._size = [], 0

    def _cut(self) -> None:
        if self._pieces and self._pieces[-1].endswith(b"\n"):
            self.close()


class TarReader:
    """Parses a tar stream handed over in pieces (``write``): each member's bytes
    go to the function ``open_member(name)`` returns for it; ``member_ended()``,
    when given, is called once each member's last byte is handed over (a restore
    hands on whole members only, never one a truncated dump cut short)."""

    def __init__(
        self,
        open_member: Callable[[str], Callable[[bytes], Any]],
        member_ended: Callable[[], Any] | None = None,
    ) -> None:
        self._open = open_member
        self._ended_member = member_ended
        self._header = bytearray()
        self._sink: Callable[[bytes], Any] | None = None
        self._remaining = 0
        self._padding = 0
        self.ended = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.ended:
            if self._remaining:
                take = min(self._remaining, len(view))
                self._sink(bytes(view[:take]))
                self._remaining -= take
                view = view[take:]
                if not self._remaining and self._ended_member:
                    self._ended_member()
            elif self._padding:
                take = min(self._padding, len(view))
                self._padding -= take
                view = view[take:]
            else:
                take = BLOCK - len(self._header)
                self._header += view[:take]
                view = view[take:]
                if len(self._header) == BLOCK:
                    self._start_member(bytes(self._header))
                    self._header.clear()

    def _start_member(self, header: bytes) -> None:
        if header == bytes(BLOCK):
            self.ended = True  # what follows is the end marker's padding
            return
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.TarError as exc:
            raise DumpDamaged(f"The dump is damaged: a bad tar header ({exc}).") from exc
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.size < 0:
            raise DumpDamaged(
                f"The dump is damaged: tar member {info.name!r} is not a regular file of "
                "a size (pgclone writes no other)."
            )
        self._sink = self._open(info.name)
        self._remaining, self._padding = info.size, -info.size % BLOCK
        if not info.size and self._ended_member:
            self._ended_member()

    def close(self) -> None:
        if not self.ended:
            raise DumpDamaged("The dump is damaged: its tar stream stops before its end.")


def read_plan(data: bytes) -> dict[str, Any]:
    try:
        plan = json.load(io.BytesIO(data))
    except (ValueError, RecursionError) as exc:
        raise DumpDamaged(f"The dump is damaged: its {PLAN} is no JSON ({exc}).") from exc
    if not isinstance(plan, dict) or not isinstance(plan.get("format"), str):
        raise DumpDamaged(f"The dump is damaged: its {PLAN} names no format.")
    if plan["format"] not in FORMATS:
        refuse_unknown(plan["format"], f"The dump's {PLAN}")
        raise DumpDamaged(f"The dump's {PLAN} is of none of the formats {', '.join(FORMATS)}.")
    tables = plan.get("tables")
    if not isinstance(tables, list) or not all(_is_table(table) for table in tables):
        raise DumpDamaged(f"The dump is damaged: its {PLAN} lists its tables wrongly.")
    members = [table["member"] for table in tables]
    if len(set(members)) != len(members) or {PRE_DATA, REST, POST_DATA} & set(members):
        raise DumpDamaged(f"The dump is damaged: its {PLAN} gives two streams one name.")
    return plan


def _is_table(table: Any) -> bool:
    """A planned table as ``plan.json`` lists it."""
    names = ("schema", "name", "member")
    return (
        isinstance(table, dict)
        and all(isinstance(table.get(key), str) and table[key] for key in names)
        and isinstance(table.get("columns"), list)
        and all(isinstance(column, str) for column in table["columns"])
    )
