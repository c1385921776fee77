"""age encryption as a stream: round trips, and failures on either side of the
pipe that must surface as errors, never as a thread waiting forever."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from typing import Any

import pyrage
import pytest
import zstandard

from pgclone.archive import age_streams, streams
from pgclone.exceptions import DumpDamaged

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
IDENTITY = pyrage.x25519.Identity.generate()
RECIPIENT = str(IDENTITY.to_public())
# Half incompressible: several MiB of ciphertext, more than the pipes hold.
DATA = os.urandom(3 * 1024 * 1024) + b"row of the dump; " * 300_000


class Sink:
    """An upload in memory that can fail after a given number of bytes."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.data = bytearray()
        self.fail_after = fail_after

    def write(self, data: bytes) -> None:
        if self.fail_after is not None and len(self.data) + len(data) > self.fail_after:
            raise OSError(28, "No space left on device")
        self.data += data


class FailingSource:
    """A stream that fails half-way: pg_dump dying, S3 cut off."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        self.stream = io.BytesIO(data)
        self.fail_at = fail_at

    def read(self, size: int = -1) -> bytes:
        if self.stream.tell() >= self.fail_at:
            raise RuntimeError("the stream stopped")
        return self.stream.read(size)


def within(seconds: float, action: Callable[[], Any]) -> Any:
    """Run ``action``; fail (rather than hang the suite) if it does not return in time."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds}s: a deadlock"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def no_crypto_threads() -> bool:
    return not [
        t
        for t in threading.enumerate()
        if t.name.startswith(("pgclone-encrypt", "pgclone-decrypt"))
    ]


def encrypted_dump(recipients: list[str] | None = None) -> tuple[bytes, dict[str, Any]]:
    sink = Sink()
    stats = streams.compress(
        io.BytesIO(DATA), sink, level=1, on_progress=lambda _: None,
        recipients=recipients or [RECIPIENT],
    )  # fmt: skip
    return bytes(sink.data), stats


def decrypt(stored: bytes, stats: dict[str, Any], identities: list[Any] | None = None) -> bytes:
    out = bytearray()
    streams.decompress(
        io.BytesIO(stored), out.extend,
        expected_sha256=stats["sha256"], expected_raw_size=stats["raw_size"],
        on_progress=lambda _: None, identities=identities or [IDENTITY],
        expected_plaintext_sha256=stats["plaintext_sha256"],
    )  # fmt: skip
    return bytes(out)


def _zstd_frames_in(stored: bytes) -> list[int]:
    """Where a zstd frame of the dump starts in ``stored``: the magic number alone
    turns up by chance in a few MB of ciphertext (about once in 4 GB), so each
    place it does is decoded, and counts only when it gives the dump's bytes."""
    found, at = [], stored.find(ZSTD_MAGIC)
    while at != -1:
        try:
            decoded = zstandard.ZstdDecompressor().decompressobj().decompress(stored[at:])
        except zstandard.ZstdError:
            decoded = b""
        if decoded and DATA.startswith(decoded[:64]):
            found.append(at)
        at = stored.find(ZSTD_MAGIC, at + 1)
    return found


def test_round_trip_stores_neither_rows_nor_zstd_frames():
    stored, stats = within(30, encrypted_dump)

    assert b"row of the dump" not in stored and not _zstd_frames_in(stored)
    assert stats["size"] == len(stored) and stats["encryption"] == {
        "method": "age",
        "recipients": [RECIPIENT],
    }
    assert stats["plaintext_sha256"] != stats["sha256"]
    assert within(30, lambda: decrypt(stored, stats)) == DATA
    assert no_crypto_threads()


def test_any_one_of_several_recipients_decrypts():
    other = pyrage.x25519.Identity.generate()
    stored, stats = encrypted_dump([str(other.to_public()), RECIPIENT])
    assert decrypt(stored, stats, [IDENTITY]) == DATA
    assert decrypt(stored, stats, [other]) == DATA


def test_storage_failing_half_way_surfaces_its_error():
    sink = Sink(fail_after=1024 * 1024)
    with pytest.raises(OSError, match="No space left on device"):
        within(
            30,
            lambda: streams.compress(
                io.BytesIO(DATA),
                sink,
                level=1,
                on_progress=lambda _: None,
                recipients=[RECIPIENT],
            ),
        )
    assert no_crypto_threads()


def test_the_source_failing_half_way_surfaces_its_error():
    source = FailingSource(DATA, fail_at=2 * 1024 * 1024)
    with pytest.raises(RuntimeError, match="the stream stopped"):
        within(
            30,
            lambda: streams.compress(
                source, Sink(), level=1, on_progress=lambda _: None, recipients=[RECIPIENT]
            ),
        )
    assert no_crypto_threads()


def test_a_cancel_raised_by_progress_stops_both_threads():
    def cancelled(_: int) -> None:
        raise KeyboardInterrupt  # JobCancelled, or Ctrl-C in an --inline run

    with pytest.raises(KeyboardInterrupt):
        within(
            30,
            lambda: streams.compress(
                io.BytesIO(DATA), Sink(), level=1, on_progress=cancelled, recipients=[RECIPIENT]
            ),
        )
    stored, stats = encrypted_dump()
    with pytest.raises(KeyboardInterrupt):
        within(
            30,
            lambda: streams.decompress(
                io.BytesIO(stored),
                bytearray().extend,
                expected_sha256=stats["sha256"],
                on_progress=cancelled,
                identities=[IDENTITY],
            ),
        )
    assert no_crypto_threads()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: (
            data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1 :]
        ),
        lambda data: data[:-100],  # truncated inside the last chunk
        lambda data: data[: len(data) // 2],  # truncated between chunks
    ],
    ids=["tampered", "tail-cut", "half"],
)
def test_damaged_ciphertext_fails_decryption(damage):
    stored, stats = encrypted_dump()
    with pytest.raises(DumpDamaged, match="could not be decrypted"):
        within(30, lambda: decrypt(damage(stored), {**stats, "sha256": None}))
    assert no_crypto_threads()


def test_a_consumer_that_stops_reading_ends_the_decrypting_thread():
    """pg_restore failing early: its writes fail, the rest is not waited for."""
    stored, stats = encrypted_dump()
    written = 0

    def write(data: bytes) -> None:
        nonlocal written
        written += len(data)
        if written > 1024 * 1024:
            raise BrokenPipeError("pg_restore exited")

    with pytest.raises(BrokenPipeError):
        within(
            30,
            lambda: streams.decompress(
                io.BytesIO(stored),
                write,
                expected_sha256=stats["sha256"],
                on_progress=lambda _: None,
                identities=[IDENTITY],
            ),
        )
    assert no_crypto_threads()


def test_a_reader_closed_early_does_not_wait_for_the_rest():
    stored, _ = encrypted_dump()
    decrypting = age_streams.Decrypting(io.BytesIO(stored), [IDENTITY])
    assert len(decrypting.read(1000)) == 1000
    within(30, decrypting.close)
    decrypting.raise_if_failed()  # the broken pipe caused by closing is no failure
    assert no_crypto_threads()


def test_the_wrong_identity_is_refused():
    stored, stats = encrypted_dump()
    with pytest.raises(DumpDamaged, match="could not be decrypted"):
        within(30, lambda: decrypt(stored, stats, [pyrage.x25519.Identity.generate()]))


def test_the_plaintext_checksum_is_checked_after_decryption():
    stored, stats = encrypted_dump()
    with pytest.raises(DumpDamaged, match="once decrypted, its SHA-256 is"):
        decrypt(stored, {**stats, "plaintext_sha256": "0" * 64})


def test_the_plaintext_is_the_zstd_stream():
    plain = bytearray()
    decrypting = age_streams.Decrypting(io.BytesIO(encrypted_dump()[0]), [IDENTITY])
    with decrypting:
        while chunk := decrypting.read(65536):
            plain += chunk
    assert plain.startswith(ZSTD_MAGIC)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(bytes(plain)) == DATA


def test_storage_failing_while_reading_surfaces_its_own_error():
    """An S3 read failing mid-restore: its error, not a decryption error."""
    stored, stats = encrypted_dump()
    source = FailingSource(stored, fail_at=len(stored) // 2)
    with pytest.raises(RuntimeError, match="the stream stopped"):
        within(
            30,
            lambda: streams.decompress(
                source, bytearray().extend, expected_sha256=stats["sha256"],
                on_progress=lambda _: None, identities=[IDENTITY],
            ),
        )  # fmt: skip
    assert no_crypto_threads()
