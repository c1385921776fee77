"""Streaming a dump through compression into storage, in bounded memory."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import Any, BinaryIO

import zstandard

from pgclone.exceptions import DumpDamaged
from pgclone.storage import Upload

CHUNK_SIZE = 1024 * 1024
COMPRESSION = "zstd"


def compress(
    source: BinaryIO, upload: Upload, *, level: int, on_progress: Callable[[int], Any]
) -> dict[str, Any]:
    """Read ``source`` to its end, writing zstd-compressed bytes to ``upload``.

    Returns the sizes and the SHA-256 of what was stored, which restores and
    ``verify`` check before trusting the dump.
    """
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
    digest = hashlib.sha256()
    raw_size = size = 0

    def emit(data: bytes) -> None:
        nonlocal size
        if data:
            digest.update(data)
            upload.write(data)
            size += len(data)

    while chunk := source.read(CHUNK_SIZE):
        raw_size += len(chunk)
        emit(compressor.compress(chunk))
        on_progress(len(chunk))
    emit(compressor.flush())
    return {
        "compression": COMPRESSION,
        "raw_size": raw_size,
        "size": size,
        "sha256": digest.hexdigest(),
    }


def decompress(
    source: BinaryIO,
    write: Callable[[bytes], Any],
    *,
    expected_sha256: str | None,
    on_progress: Callable[[int], Any],
) -> int:
    """Decompress a stored dump into ``write``, checking it on the way.

    Raises DumpDamaged when the bytes are not what the dump step recorded
    (checksum), are not zstd, or stop before the end (truncated). Returns the
    number of stored bytes read.
    """
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := source.read(CHUNK_SIZE):
            size += len(chunk)
            digest.update(chunk)
            data = decompressor.decompress(chunk)
            if data:
                write(data)
            on_progress(len(chunk))
    except zstandard.ZstdError as exc:
        raise DumpDamaged(f"The dump is damaged (zstd: {exc}).") from exc
    if not decompressor.eof:
        raise DumpDamaged("The dump is truncated: its compressed stream ends early.")
    if expected_sha256 and digest.hexdigest() != expected_sha256:
        raise DumpDamaged(_checksum_message(digest.hexdigest(), expected_sha256))
    if decompressor.unused_data:
        raise DumpDamaged("The dump is damaged: bytes follow the end of its compressed stream.")
    return size


def verify(source: BinaryIO, expected_sha256: str) -> None:
    """Check a stored dump's SHA-256 against the one recorded when it was made."""
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK_SIZE):
        digest.update(chunk)
    if digest.hexdigest() != expected_sha256:
        raise DumpDamaged(_checksum_message(digest.hexdigest(), expected_sha256))


def _checksum_message(actual: str, expected: str) -> str:
    return (
        f"The dump is damaged: its SHA-256 is {actual}, "
        f"but {expected} was recorded when it was made."
    )


def decompress_into(
    source: BinaryIO, proc: Any, *, expected_sha256: str | None, on_progress: Callable[[int], Any]
) -> None:
    """Decompress a stored dump into a program's stdin (pg_restore), checking it.

    The program may stop reading early (when it fails, its exit status says
    why); the rest of the dump is still read so that its checksum is checked.
    """
    stopped_reading = False

    def feed(data: bytes) -> None:
        nonlocal stopped_reading
        if not stopped_reading:
            try:
                proc.stdin.write(data)
            except BrokenPipeError:
                stopped_reading = True

    try:
        decompress(source, feed, expected_sha256=expected_sha256, on_progress=on_progress)
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
