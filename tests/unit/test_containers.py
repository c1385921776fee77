"""The planned dump's container: chunked tar members, parsed back in any pieces."""

from __future__ import annotations

import io
import tarfile

import pytest

from pgclone.archive import containers
from pgclone.exceptions import DumpDamaged


def written(streams: dict[str, bytes], member_size: int) -> bytes:
    out = io.BytesIO()
    tar = containers.TarWriter(out.write)
    tar.json(containers.PLAN, {"format": containers.FORMAT, "tables": []})
    for prefix, data in streams.items():
        chunks = tar.stream(prefix)
        for start in range(0, len(data), 7):
            chunks.write(data[start : start + 7])
        chunks.close()
    tar.close()
    return out.getvalue()


def test_streams_become_bounded_members_that_tar_reads(monkeypatch):
    monkeypatch.setattr(containers, "MEMBER_SIZE", 10)
    data = written({"pre-data": b"a" * 25, "data/0000": b"", "rest": b"xyz"}, 10)

    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]

    assert [name for name, _ in members] == [
        "plan.json", "pre-data/000000", "pre-data/000001", "pre-data/000002",
        "data/0000/000000", "rest/000000",
    ]  # fmt: skip
    assert b"".join(d for n, d in members if n.startswith("pre-data/")) == b"a" * 25
    assert max(len(d) for _, d in members[1:]) <= 10


@pytest.mark.parametrize("piece", [1, 511, 512, 4096])
def test_the_reader_routes_members_whatever_the_pieces(monkeypatch, piece):
    monkeypatch.setattr(containers, "MEMBER_SIZE", 100)
    data = written({"pre-data": bytes(range(256)) * 3, "rest": b"end"}, 100)
    got: dict[str, bytearray] = {}

    def open_member(name: str):
        return got.setdefault(containers.stream_of(name), bytearray()).extend

    reader = containers.TarReader(open_member)
    for start in range(0, len(data), piece):
        reader.write(data[start : start + piece])
    reader.close()

    assert bytes(got["pre-data"]) == bytes(range(256)) * 3 and bytes(got["rest"]) == b"end"


@pytest.mark.parametrize("piece", [1, 511, 4096])
def test_the_reader_says_when_each_member_has_all_come(piece):
    """What a parallel restore relies on to hand on whole members only: the
    bytes of a member, then its end; a member cut short never ends."""
    out = io.BytesIO()
    tar = containers.TarWriter(out.write)
    for name, data in (("data/0000/000000", b"a\n" * 300), ("data/0000/end", b"")):
        tar.member(name, data)
    tar.close()
    data = out.getvalue()
    log: list[tuple[str, int]] = []

    def open_member(name: str):
        log.append((name, 0))
        return lambda chunk: log.append(("bytes", len(chunk)))

    reader = containers.TarReader(open_member, lambda: log.append(("ended", 0)))
    for start in range(0, len(data), piece):
        reader.write(data[start : start + piece])
    reader.close()

    ends = [i for i, (what, _) in enumerate(log) if what == "ended"]
    assert [log[i - 1][0] for i in ends] == ["bytes", "data/0000/end"]
    assert sum(size for what, size in log[: ends[0]] if what == "bytes") == 600
    cut = []
    reader = containers.TarReader(lambda name: lambda chunk: None, lambda: cut.append(1))
    reader.write(data[: 512 + 300])
    assert cut == []


def test_a_truncated_container_is_damaged():
    data = written({"rest": b"x" * 1000}, 100)
    reader = containers.TarReader(lambda name: lambda chunk: None)
    reader.write(data[:700])
    with pytest.raises(DumpDamaged, match="stops before its end"):
        reader.close()


def test_the_pg_dump_flags_of_a_planned_dump_follow_its_version(monkeypatch):
    from pgclone.pg import programs
    from pgclone.sharing import planned_dump

    for version, flags in (
        ("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)", ["--no-blobs"]),
        ("pg_dump (PostgreSQL) 16.4", ["--no-large-objects"]),
        ("pg_dump (PostgreSQL) 18.1", ["--no-large-objects", "--no-statistics"]),
    ):
        monkeypatch.setattr(programs, "tool_version", lambda program, v=version: v)
        assert planned_dump.tool_flags() == flags


def cut(pieces: list[bytes]) -> list[bytes]:
    members: list[bytes] = []
    rows = containers.RowMembers(members.append)
    for piece in pieces:
        rows.write(piece)
    rows.close()
    return members


def test_rows_are_cut_into_members_of_whole_rows(monkeypatch):
    monkeypatch.setattr(containers, "MEMBER_SIZE", 10)
    rows = [f"{i}\tv{i}\n".encode() for i in range(30)]

    members = cut(rows)

    assert len(members) > 3 and b"".join(members) == b"".join(rows)
    assert all(member.endswith(b"\n") and len(member) <= 10 for member in members)


def test_a_row_longer_than_a_member_is_a_member_of_its_own(monkeypatch):
    monkeypatch.setattr(containers, "MEMBER_SIZE", 10)
    big = b"1\t" + b"x" * 30 + b"\n"

    assert cut([b"a\n", b"b\n", big, b"c\n"]) == [b"a\nb\n", big, b"c\n"]


def test_a_row_handed_over_in_pieces_is_never_split(monkeypatch):
    monkeypatch.setattr(containers, "MEMBER_SIZE", 10)

    members = cut([b"1\tabcdef", b"ghijkl", b"mn\n", b"2\tb\n"])

    assert members == [b"1\tabcdefghijklmn\n", b"2\tb\n"]


def test_no_rows_make_no_member():
    assert cut([]) == []


def test_members_of_two_sessions_interleave_in_one_stream(monkeypatch):
    """Pre-cut members continue the stream's numbering; their concatenation, what a
    restore's COPY reads, holds every row of both sessions once."""
    monkeypatch.setattr(containers, "MEMBER_SIZE", 16)
    first = [f"a{i}\t{'x' * (i % 7)}\n".encode() for i in range(40)]
    second = [f"b{i}\t{'y' * (i % 5)}\n".encode() for i in range(25)]
    out = io.BytesIO()
    tar = containers.TarWriter(out.write)
    chunks = tar.stream("data/0000")
    for pair in zip(cut(first), cut(second) + [b""] * 40, strict=False):
        for member in filter(None, pair):
            chunks.member(member)
    chunks.close()
    tar.close()

    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r|") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]

    assert [name for name, _ in members] == [f"data/0000/{n:06d}" for n in range(len(members))]
    assert all(data.endswith(b"\n") for _, data in members)
    restored = b"".join(data for _, data in members).splitlines(keepends=True)
    assert sorted(restored) == sorted(first + second)
    assert restored != first + second  # interleaved, not one after the other


def test_a_member_after_written_bytes_comes_after_them():
    out = io.BytesIO()
    tar = containers.TarWriter(out.write)
    chunks = tar.stream("rest")
    chunks.write(b"abc")
    chunks.member(b"def")
    chunks.close()
    tar.close()

    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r|") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]

    assert members == [("rest/000000", b"abc"), ("rest/000001", b"def")]


def test_the_container_reaches_the_reader_whole_in_any_read_size():
    """What the writing thread hands over (container_writer.ContainerPipe, a pipe without the
    kernel) comes out in order, whatever the reader's sizes, then b"" for good."""
    import threading

    from pgclone.archive.container_writer import ContainerPipe

    source = ContainerPipe()
    pieces = [bytes([n]) * (n * 1000 + 1) for n in range(20)]

    def writer() -> None:
        for piece in pieces:
            source.write(piece)
            source.write(b"")  # nothing to hand over: skipped
        source.end()

    thread = threading.Thread(target=writer)
    thread.start()
    read, sizes = [], [1, 7, 4096, -1, 100_000]
    while True:
        size = sizes[len(read) % len(sizes)]
        data = source.read(size)
        if not data:
            break
        assert size == -1 or len(data) <= size
        read.append(data)
    thread.join(5)
    assert b"".join(read) == b"".join(pieces)
    assert source.read() == b"" and source.read(10) == b""


def test_a_reader_that_stops_makes_the_writer_stop():
    import threading

    from pgclone.archive.container_writer import ContainerPipe

    source = ContainerPipe(depth=1)
    stopped = []

    def writer() -> None:
        try:
            while True:
                source.write(b"x" * 1024)
        except BrokenPipeError as exc:
            stopped.append(exc)
        finally:
            source.end()

    thread = threading.Thread(target=writer)
    thread.start()
    assert source.read(10) == b"x" * 10
    source.close()
    thread.join(5)
    assert not thread.is_alive() and stopped


class _Sink:
    def __init__(self, sinks: dict, stream: str) -> None:
        self.data, self.closed, self.aborted = bytearray(), False, False
        sinks[stream] = self

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


TABLE = {"schema": "public", "name": "t", "columns": ["id"], "member": "data/0000"}


def routed(members: list[tuple[str, bytes]], tables=(TABLE,), end: bool = True) -> dict:
    """The container of ``members`` (after its plan.json) through a Router, to its finish."""
    from pgclone.archive import planned_restore

    out = io.BytesIO()
    tar = containers.TarWriter(out.write)
    tar.json(containers.PLAN, {"format": containers.FORMAT, "tables": list(tables)})
    for name, data in members:
        tar.member(name, data)
    if end:
        tar.close()
    sinks: dict[str, _Sink] = {}
    router = planned_restore.Router(lambda stream, table: _Sink(sinks, stream))
    router.write(out.getvalue())
    try:
        router.finish()
    finally:
        routed.sinks = sinks
    return sinks


WHOLE = [("pre-data/000000", b"pre"), ("data/0000/000000", b"1\n"), ("rest/000000", b"r"),
         ("data/0000/end", b""), ("rest/end", b""), ("post-data/000000", b"post")]  # fmt: skip


def test_a_whole_container_reaches_its_sinks():
    sinks = routed(WHOLE)
    assert {s: bytes(sink.data) for s, sink in sinks.items()} == {
        "pre-data": b"pre", "data/0000": b"1\n", "rest": b"r", "post-data": b"post",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("members", "tables", "message"),
    [
        ([m for m in WHOLE if not m[0].startswith("data/")], (TABLE,), "no 'data/0000' stream"),
        ([m for m in WHOLE if m[0] != "pre-data/000000"], (TABLE,), "no 'pre-data' stream"),
        ([*WHOLE[:2], ("data/0000/000000", b"1\n"), *WHOLE[2:]], (TABLE,), "comes where"),
        ([*WHOLE[:2], ("data/0000/000002", b"1\n"), *WHOLE[2:]], (TABLE,), "comes where"),
        (WHOLE, (TABLE, {**TABLE, "name": "u"}), "gives two streams one name"),
        (WHOLE, ({**TABLE, "columns": "id"},), "lists its tables wrongly"),
        ([], (TABLE,), "no 'pre-data' stream"),
    ],
    ids=["a table's stream missing", "pre-data missing", "a member twice", "a member skipped",
         "two tables, one stream", "a bad table", "nothing but the plan"],
)  # fmt: skip
def test_a_container_missing_or_repeating_a_stream_s_member_is_damaged(members, tables, message):
    with pytest.raises(DumpDamaged, match=message):
        routed(members, tables)


def test_a_tar_member_that_is_no_regular_file_is_damaged():
    out = io.BytesIO()
    tar = containers.TarWriter(out.write)
    tar.json(containers.PLAN, {"format": containers.FORMAT, "tables": []})
    link = tarfile.TarInfo("pre-data/000000")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    out.write(link.tobuf(tarfile.USTAR_FORMAT))
    reader = containers.TarReader(lambda name: lambda data: None)
    with pytest.raises(DumpDamaged, match="not a regular file"):
        reader.write(out.getvalue())


def test_a_container_cut_before_its_end_aborts_its_sinks():
    with pytest.raises(DumpDamaged, match="stops before its end"):
        routed(WHOLE, end=False)
    assert routed.sinks["post-data"].aborted  # its pg_restore would wait for more
