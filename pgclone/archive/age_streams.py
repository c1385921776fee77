"""age encryption and decryption as streams, in bounded memory.

pyrage's ``encrypt_io`` and ``decrypt_io`` each read one file object to its
end and write another. To put them in the middle of a stream (zstd → age →
storage when dumping, storage → age → zstd when restoring), each runs in a
thread of its own, connected to the caller through an OS pipe: at most the
pipe's buffers (about 2 MiB) are in flight, whatever the dump's size.

Every way out closes both ends of the pipe, so neither side waits forever
for the other: when the caller stops (a failure, a cancel), the thread sees
the end of its input or a broken pipe; when the thread fails (a write to
storage, a tampered ciphertext), the caller gets its error on its next
read or write, or when it closes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO

import pyrage

from pgclone.exceptions import DumpDamaged

BUFFER = 1024 * 1024


def _pipe() -> tuple[BinaryIO, BinaryIO]:
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # a bigger pipe: fewer switches between threads
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, BUFFER)
    return open(read_fd, "rb", buffering=BUFFER), open(write_fd, "wb", buffering=BUFFER)


def _close(file: BinaryIO) -> None:
    with contextlib.suppress(OSError):  # BrokenPipeError: the other side is gone already
        file.close()


class _Counting:
    """The storage's side of encryption: what age writes, hashed and counted.

    pyrage turns an exception raised while writing into its own EncryptError;
    the original (a StorageError, say) is kept in ``error`` to be raised instead.
    """

    def __init__(self, write: Any) -> None:
        self._write = write
        self.digest = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        try:
            self._write(bytes(data))
        except BaseException as exc:
            self.error = exc
            raise
        return len(data)

    def flush(self) -> None:
        """age flushes its output; what was written is already handed on."""


class Encrypting:
    """A writer that encrypts what it is given with age and hands the ciphertext
    to ``write`` (from its own thread). ``close`` finishes the stream and raises
    what encrypting or writing raised; ``abort`` ends it after a failure."""

    def __init__(self, write: Any, recipients: Sequence[Any]) -> None:
        self.output = _Counting(write)
        self.error: BaseException | None = None
        self._reader, self._writer = _pipe()
        self._thread = threading.Thread(
            target=self._run, args=(list(recipients),), name="pgclone-encrypt", daemon=True
        )
        self._thread.start()

    def _run(self, recipients: list[Any]) -> None:
        try:
            pyrage.encrypt_io(self._reader, self.output, recipients)
        except BaseException as exc:  # handed to the caller's thread
            self.error = self.output.error or exc
        finally:
            _close(self._reader)  # the caller's next write fails at once

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        try:
            self._writer.write(data)
        except BrokenPipeError:
            self._thread.join()
            raise self.error or BrokenPipeError("the encrypting thread stopped") from None

    def close(self) -> None:
        """Encrypt what is left and wait for it to be written."""
        try:
            self._writer.close()
        except BrokenPipeError:
            pass  # the thread stopped: its error says why
        finally:
            self._thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """After a failure of the caller's: stop, without raising (the first error counts)."""
        _close(self._writer)
        self._thread.join()

    @property
    def sha256(self) -> str:
        return self.output.digest.hexdigest()

    @property
    def size(self) -> int:
        return self.output.size


class _Reading:
    """The storage's side of decryption; keeps an exception raised while reading
    (pyrage would replace it with its own)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self.source.read(size)
        except BaseException as exc:
            self.error = exc
            raise


class Decrypting:
    """A reader of what age decrypts from ``source`` (read in its own thread).

    ``read`` returns b"" only once the whole ciphertext was read and
    authenticated; a truncated or tampered one raises DumpDamaged there. Use
    it as a context manager (or call ``close``) so the thread always ends.
    """

    def __init__(self, source: Any, identities: Sequence[Any]) -> None:
        self.source = _Reading(source)
        self.error: BaseException | None = None
        self._reader, self._writer = _pipe()
        self._closed = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(list(identities),), name="pgclone-decrypt", daemon=True
        )
        self._thread.start()

    def _run(self, identities: list[Any]) -> None:
        try:
            pyrage.decrypt_io(self.source, self._writer, identities)
            self._writer.flush()
        except BaseException as exc:  # handed to the reader's thread
            self.error = self.source.error or exc
        finally:
            _close(self._writer)  # the reader sees the end of the stream

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)
        if not data:
            self._thread.join()
            self._failure = self.error
            self.raise_if_failed()
        return data

    def raise_if_failed(self) -> None:
        """Raise DumpDamaged if decrypting failed before this side stopped reading
        (or what reading the stored dump raised)."""
        if self._failure is not None and self._failure is self.source.error:
            raise self._failure
        if self._failure is not None:
            raise DumpDamaged(
                "The dump is damaged: it could not be decrypted, its ciphertext is "
                f"truncated or was changed after it was made (age: {self._failure})."
            ) from self._failure

    def close(self) -> None:
        """Stop reading; the thread stops at its next write (a broken pipe)."""
        if self._closed:
            return
        self._closed = True
        # The thread records its error before it closes its end, so an error
        # already there is its own; one after this is the broken pipe caused here.
        if self._failure is None:
            self._failure = self.error
        _close(self._reader)
        self._thread.join()

    def __enter__(self) -> Decrypting:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
