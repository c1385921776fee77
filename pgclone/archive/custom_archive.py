"""Reading pg_dump's custom format as it streams: its table of contents, and
where each table's rows are in its data.

pgclone's pg_dump archives are uncompressed (``--compress=0``): the COPY text
of each table's rows is in them as it is, in blocks (``[sign][length]``
ints, then the bytes) after a header naming the table's entry (``1`` then its
dump id); an entry ends with a block of length 0. pg_dump up to 18 writes each
row as a block of its own (checked with 15). Read here: the header and the
table of contents (``ReadHead``/``ReadToc`` of pg_backup_archiver.c), which
give each data entry's table and columns (its ``COPY … FROM stdin`` statement).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgclone.exceptions import DumpDamaged

MAGIC = b"PGDMP"
BLOCK_DATA = 1
_COPY = re.compile(r"^COPY\s+.*?\((?P<columns>.*)\)\s+FROM\s+stdin;", re.DOTALL)


class Short(Exception):
    """The bytes read so far end inside the table of contents."""


@dataclass(frozen=True)
class Entry:
    table: str  # schema.name, as messages name it
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Contents:
    entries: dict[int, Entry]  # the data entries by dump id
    data_start: int  # where the data's blocks begin
    int_size: int


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0
        self.version, self.int_size, self.off_size = (0, 0, 0), 4, 8

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise Short
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def str(self) -> str | None:
        size = self.int()
        return None if size < 0 else self.take(size).decode("utf-8", "replace")


def read_contents(data: bytes) -> Contents:
    """The archive's table of contents, from its first bytes; raises Short when
    they end inside it, DumpDamaged when they are no custom-format archive."""
    reader = _Reader(data)
    if reader.take(5) != MAGIC:
        raise DumpDamaged("The dump is damaged: a pg_dump archive in it has no PGDMP header.")
    reader.version = (reader.byte(), reader.byte(), reader.byte())
    if reader.version < (1, 12, 0):
        raise DumpDamaged(f"pg_dump archive version {reader.version} is older than pgclone's.")
    reader.int_size, reader.off_size = reader.byte(), reader.byte()
    reader.byte()  # the format
    if reader.version >= (1, 15, 0):
        reader.byte()  # the compression algorithm
    else:
        reader.int()  # the compression level
    for _ in range(7):  # the time it was made
        reader.int()
    for _ in range(3):  # the database's name, the server's and pg_dump's versions
        reader.str()
    entries = {}
    for _ in range(reader.int()):
        dump_id, entry = _entry(reader)
        if entry is not None:
            entries[dump_id] = entry
    return Contents(entries, reader.at, reader.int_size)


def _entry(reader: _Reader) -> tuple[int, Entry | None]:
    dump_id = reader.int()
    reader.int()  # had a data dumper
    reader.str(), reader.str()  # catalog ids
    tag, desc = reader.str(), reader.str()
    reader.int()  # section
    reader.str(), reader.str()  # definition, drop statement
    copy, namespace = reader.str(), reader.str()
    reader.str()  # tablespace
    if reader.version >= (1, 14, 0):
        reader.str()  # table access method
    if reader.version >= (1, 16, 0):
        reader.int()  # relkind
    reader.str(), reader.str()  # owner, "with oids"
    while reader.str() is not None:  # dependencies
        pass
    reader.take(1 + reader.off_size)  # the data's offset (custom format)
    if desc != "TABLE DATA" or not copy:
        return dump_id, None
    return dump_id, Entry(f"{namespace}.{tag}", copy_columns(copy))


def copy_columns(statement: str) -> tuple[str, ...]:
    """The columns of ``COPY t (a, "b c") FROM stdin;``, unquoted."""
    match = _COPY.match(statement)
    if not match:
        return ()
    columns, name, quoted = [], "", False
    text = match["columns"]
    index = 0
    while index < len(text):
        char = text[index]
        if char == '"':
            if quoted and text[index + 1 : index + 2] == '"':
                name += '"'
                index += 1
            else:
                quoted = not quoted
        elif char == "," and not quoted:
            columns.append(name.strip())
            name = ""
        else:
            name += char
        index += 1
    columns.append(name.strip())
    return tuple(columns)


def entry_marker(int_size: int) -> bytes:
    """What precedes every data entry but the first: the end of the entry
    before (a block of length 0) and the data block's type. COPY text holds
    no zero byte, and a row's block header fewer than ``int_size + 1`` in a row."""
    return bytes(1 + int_size) + bytes((BLOCK_DATA,))


def row_start(buffer: bytes, position: int, int_size: int) -> int | None:
    """Where the row holding ``position`` starts in ``buffer`` (after its block
    header), or None when its start is not in ``buffer``."""
    previous = buffer.rfind(b"\n", 0, position)
    header = 1 + int_size
    for start in range(max(previous + 1, header), position + 1):
        if buffer[start - header] != 0:
            continue
        length = int.from_bytes(buffer[start - int_size : start], "little")
        end = start + length - 1
        if length > position - start and (end >= len(buffer) or buffer[end] == 0x0A):
            return start
    return None
