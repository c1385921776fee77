"""Streaming a dump through compression into storage, in bounded memory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, BinaryIO

import zstandard

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
