"""The dump's zstd stream, compressed on threads: one standard frame that the
restore's reader and ``zstd -d`` read, whatever the number of threads."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import threading

import pytest
import zstandard

from pgclone.archive import streams
from pgclone.exceptions import DumpDamaged

# Several zstd jobs' worth: rows like COPY text, with barely compressible tokens.
DATA = b"".join(
    b"%d\talpha bravo %d\t%s\n" % (n, n * 7919 % 100_000, os.urandom(8).hex().encode())
    for n in range(150_000)
)


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


class FailingSource:
    """pg_dump or a COPY session dying half-way through the dump."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        self.stream, self.fail_at = io.BytesIO(data), fail_at

    def read(self, size: int = -1) -> bytes:
        if self.stream.tell() >= self.fail_at:
            raise RuntimeError("the stream stopped")
        return self.stream.read(size)


def compressed(threads: int) -> tuple[bytes, dict]:
    sink, seen = Sink(), []
    stats = streams.compress(
        io.BytesIO(DATA), sink, level=3, on_progress=seen.append, threads=threads
    )
    assert sum(seen) == len(DATA)
    return bytes(sink.data), stats


def read_back(stored: bytes, stats: dict) -> bytes:
    out = bytearray()
    streams.decompress(
        io.BytesIO(stored), out.extend, expected_sha256=stats["sha256"],
        expected_raw_size=stats["raw_size"], on_progress=lambda _: None,
    )  # fmt: skip
    return bytes(out)


@pytest.mark.parametrize("threads", [1, 2, 4, 64])
def test_a_dump_compressed_on_threads_is_one_frame_the_restore_reads(threads):
    stored, stats = compressed(threads)

    params = zstandard.get_frame_parameters(stored)
    assert params.has_checksum
    assert stats == {
        "compression": "zstd",
        "raw_size": len(DATA),
        "size": len(stored),
        "sha256": hashlib.sha256(stored).hexdigest(),
    }
    # The restore's reader stops at the end of the first frame: all of it is there.
    assert read_back(stored, stats) == DATA


def test_the_stored_bytes_do_not_depend_on_the_number_of_threads_above_one():
    assert compressed(2)[0] == compressed(3)[0] == compressed(4)[0]


@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd program is not installed")
def test_zstd_decompresses_a_dump_compressed_on_threads():
    stored, _ = compressed(2)

    listed = subprocess.run(["zstd", "-lv", "-"], input=stored, capture_output=True, check=False)
    unpacked = subprocess.run(["zstd", "-dc"], input=stored, capture_output=True, check=True)

    assert unpacked.stdout == DATA
    if listed.returncode == 0:  # older zstd programs list files, not stdin
        assert b"Frames: 1" in listed.stdout


def test_a_truncated_dump_compressed_on_threads_is_refused():
    stored, stats = compressed(2)

    with pytest.raises(DumpDamaged, match=r"^The dump is truncated: it decompresses to \d+ bytes"):
        read_back(stored[: len(stored) // 2], {**stats, "sha256": None})


def test_a_source_that_fails_half_way_raises_and_leaves_no_thread():
    before = threading.active_count()

    with pytest.raises(RuntimeError, match="the stream stopped"):
        streams.compress(
            FailingSource(DATA, len(DATA) // 2), Sink(), level=3,
            on_progress=lambda _: None, threads=2,
        )  # fmt: skip

    assert threading.active_count() == before
