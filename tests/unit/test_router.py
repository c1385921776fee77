"""The restore's Router: each stream of a container to a sink of its own, the
data streams of a pgclone-container-3 container each closed at its end member,
those of a pgclone-plan-2 container open at once till the post-data, and a
pgclone-plan-1 container's one stream after another."""

from __future__ import annotations

import io

import pytest

from pgclone.archive import containers
from pgclone.archive.planned_restore import Router
from pgclone.exceptions import DumpDamaged, PgCloneError

TABLES = [
    {"schema": "public", "name": name, "columns": ["id"], "member": containers.table_prefix(i)}
    for i, name in enumerate(["a", "b"])
]


def container(members: list[tuple[str, bytes]], format: str = containers.FORMAT) -> bytes:
    out = io.BytesIO()
    tar = containers.TarWriter(out.write)
    tar.json(containers.PLAN, {"format": format, "tables": TABLES})
    for name, data in members:
        tar.member(name, data)
    tar.close()
    return out.getvalue()


class Sink:
    def __init__(self, stream: str, log: list[tuple[str, str]]) -> None:
        self.stream, self.data, self.log = stream, bytearray(), log
        log.append(("open", stream))

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.log.append(("close", self.stream))

    abort = close


def route(data: bytes, piece: int = 300) -> tuple[dict[str, Sink], list[tuple[str, str]]]:
    sinks: dict[str, Sink] = {}
    log: list[tuple[str, str]] = []

    def open_stream(stream: str, table: dict | None) -> Sink:
        assert (table is not None) == stream.startswith("data/")
        sinks[stream] = Sink(stream, log)
        return sinks[stream]

    router = Router(open_stream)
    for start in range(0, len(data), piece):
        router.write(data[start : start + piece])
    router.finish()
    return sinks, log


INTERLEAVED = [
    ("pre-data/000000", b"P0"),
    ("pre-data/000001", b"P1"),
    ("data/0000/000000", b"a0\n"),
    ("rest/000000", b"R0"),
    ("data/0001/000000", b"b0\n"),
    ("data/0000/000001", b"a1\n"),
    ("rest/000001", b"R1"),
    ("data/0001/000001", b"b1\n"),
    ("rest/000002", b"R2"),
    ("post-data/000000", b"Q0"),
    ("post-data/000001", b"Q1"),
]


@pytest.mark.parametrize("piece", [1, 512, 100_000])
def test_interleaved_data_streams_each_reach_their_sink_in_order(piece):
    sinks, log = route(container(INTERLEAVED, containers.PLAN_FORMAT), piece)

    assert {stream: bytes(sink.data) for stream, sink in sinks.items()} == {
        "pre-data": b"P0P1",
        "data/0000": b"a0\na1\n",
        "data/0001": b"b0\nb1\n",
        "rest": b"R0R1R2",
        "post-data": b"Q0Q1",
    }
    # pre-data ends before the data starts; the data streams are open together
    # and all closed before post-data starts.
    assert log == [
        ("open", "pre-data"),
        ("close", "pre-data"),
        ("open", "data/0000"),
        ("open", "rest"),
        ("open", "data/0001"),
        ("close", "data/0000"),
        ("close", "rest"),
        ("close", "data/0001"),
        ("open", "post-data"),
        ("close", "post-data"),
    ]


def test_a_data_stream_after_post_data_began_is_damage():
    members = [*INTERLEAVED[:9], ("post-data/000000", b"Q0"), ("data/0000/000002", b"a2\n")]
    with pytest.raises(DumpDamaged, match="out of order"):
        route(container(members, containers.PLAN_FORMAT))


def test_a_new_data_stream_after_post_data_began_is_damage():
    members = [m for m in INTERLEAVED if not m[0].startswith("data/0001")]
    members.append(("data/0001/000000", b"b0\n"))
    with pytest.raises(DumpDamaged, match="out of order"):
        route(container(members, containers.PLAN_FORMAT))


def test_a_plan_2_container_without_post_data_is_damaged():
    with pytest.raises(DumpDamaged, match="no 'post-data'"):
        route(container(INTERLEAVED[:9], containers.PLAN_FORMAT))


ENDED = [
    ("pre-data/000000", b"P0"),
    ("data/0000/000000", b"a0\n"),
    ("rest/000000", b"R0"),
    ("data/0000/000001", b"a1\n"),
    ("data/0000/end", b""),
    ("data/0001/000000", b"b0\n"),
    ("rest/000001", b"R1"),
    ("rest/end", b""),
    ("data/0001/end", b""),
    ("post-data/000000", b"Q0"),
]


@pytest.mark.parametrize("piece", [1, 512, 100_000])
def test_each_data_stream_of_a_container_3_closes_at_its_end(piece):
    sinks, log = route(container(ENDED), piece)

    assert {stream: bytes(sink.data) for stream, sink in sinks.items()} == {
        "pre-data": b"P0",
        "data/0000": b"a0\na1\n",
        "data/0001": b"b0\n",
        "rest": b"R0R1",
        "post-data": b"Q0",
    }
    # A table's COPY (its session) ends at its end member, not with the last table's.
    assert log == [
        ("open", "pre-data"),
        ("close", "pre-data"),
        ("open", "data/0000"),
        ("open", "rest"),
        ("close", "data/0000"),
        ("open", "data/0001"),
        ("close", "rest"),
        ("close", "data/0001"),
        ("open", "post-data"),
        ("close", "post-data"),
    ]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([m for m in ENDED if m[0] != "rest/end"], "'rest' has no end member"),
        ([*ENDED[:5], ("data/0000/000002", b"a2\n"), *ENDED[5:]], "out of order"),
        ([*ENDED[:5], ("data/0000/end", b""), *ENDED[5:]], "ends where it is not open"),
        ([("pre-data/end", b""), *ENDED], "ends where it is not open"),
        ([*ENDED[:4], ("data/0000/end", b"x"), *ENDED[5:]], "an end member holds bytes"),
    ],
    ids=["an end missing", "a member after its end", "two ends", "pre-data ended",
         "an end with bytes"],
)  # fmt: skip
def test_a_container_3_whose_streams_end_wrongly_is_damaged(members, message):
    with pytest.raises(DumpDamaged, match=message):
        route(container(members))


def test_a_container_of_a_format_to_come_is_refused_by_name():
    with pytest.raises(PgCloneError, match=r"format 'pgclone-container-4'.*upgrade pgclone"):
        route(container(ENDED, "pgclone-container-4"))


def test_a_plan_1_container_routes_one_stream_after_another():
    members = [
        ("pre-data/000000", b"P0"),
        ("data/0000/000000", b"a0\n"),
        ("data/0000/000001", b"a1\n"),
        ("data/0001/000000", b"b0\n"),
        ("rest/000000", b"R0"),
        ("rest/000001", b"R1"),
    ]
    sinks, log = route(container(members, containers.LEGACY_FORMAT))

    assert {stream: bytes(sink.data) for stream, sink in sinks.items()} == {
        "pre-data": b"P0",
        "data/0000": b"a0\na1\n",
        "data/0001": b"b0\n",
        "rest": b"R0R1",
    }
    assert log == [
        ("open", "pre-data"),
        ("close", "pre-data"),
        ("open", "data/0000"),
        ("close", "data/0000"),
        ("open", "data/0001"),
        ("close", "data/0001"),
        ("open", "rest"),
        ("close", "rest"),
    ]


def test_a_plan_1_stream_seen_again_is_damage():
    members = [
        ("pre-data/000000", b"P0"),
        ("data/0000/000000", b"a0\n"),
        ("data/0001/000000", b"b0\n"),
        ("data/0000/000001", b"a1\n"),
        ("rest/000000", b"R0"),
    ]
    with pytest.raises(DumpDamaged, match="out of order"):
        route(container(members, containers.LEGACY_FORMAT))


def test_a_plan_1_container_has_no_post_data_stream():
    members = [("pre-data/000000", b"P0"), ("rest/000000", b"R0"), ("post-data/000000", b"Q")]
    with pytest.raises(DumpDamaged, match="unexpected stream 'post-data'"):
        route(container(members, containers.LEGACY_FORMAT))
