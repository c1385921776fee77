"""A dump storage held in memory, for tests that need no folder and no S3.

:class:`InMemoryStorage` implements only the primitives that
:class:`pgclone.storage.base.Storage` leaves abstract; listing, manifest
parsing and the size check are the base class's own, so a test on the twin
runs the same code as production. It keeps the two-phase contract of the real
storages: data written through an upload stays staged (and invisible) until
``complete`` moves it under its key and writes the manifest beside it.

What it holds is public, so that a test can look at it or plant objects (a
damaged manifest, say): ``objects`` maps names relative to the storage root to
bytes, as a bucket would (a dump's data under ``DATABASE/….dump``, its
manifest under the same name plus ``.json``); ``staged`` maps upload ids to
the uploads not completed or discarded yet. ``reset()`` empties both.
"""

from __future__ import annotations

import io
import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pgclone.exceptions import DumpNotFound, StorageError
from pgclone.storage import keys
from pgclone.storage.base import MANIFEST_SUFFIX, TRIAL_SUFFIX, Storage, Upload

__all__ = ["InMemoryStorage", "InMemoryUpload", "StagedUpload"]


@dataclass
class StagedUpload:
    """The bytes of an upload not completed yet, and whether its writer closed it."""

    name: str
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False


class InMemoryUpload(Upload):
    def __init__(self, storage: InMemoryStorage, upload_id: str, name: str) -> None:
        self._storage = storage
        self._handle = {"upload_id": upload_id, "key": name}

    def _staged(self) -> StagedUpload:
        staged = self._storage.staged.get(self._handle["upload_id"])
        if staged is None:  # S3 refuses parts of an aborted upload too
            raise StorageError(f"The upload of {self._handle['key']} was discarded.")
        return staged

    def write(self, data: bytes) -> None:
        staged = self._staged()
        if staged.closed:
            raise ValueError(f"The upload of {staged.name} is closed: nothing more can be written.")
        staged.data += data

    @property
    def handle(self) -> dict[str, Any]:
        return dict(self._handle)

    def close(self) -> dict[str, Any]:
        self._staged().closed = True
        return self.handle

    def abort(self) -> None:
        self._storage.discard(self._handle["upload_id"])


class InMemoryStorage(Storage):
    """Dumps in dictionaries; one instance is one place, so share the instance
    between the steps of a test as the real steps share a folder or bucket."""

    def __init__(self, name: str = "default") -> None:
        self.location = f"memory://{name}"
        self.objects: dict[str, bytes] = {}
        self.staged: dict[str, StagedUpload] = {}
        self._numbers = itertools.count(1)
        # The dump and upload steps, and a sweep, may run in threads of one process.
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget every dump and every staged upload."""
        with self._lock:
            self.objects.clear()
            self.staged.clear()

    def check(self) -> None:
        """Memory can always be written to."""

    def start_upload(
        self, key: keys.DumpKey, job_id: str, expected_size: int = 0
    ) -> InMemoryUpload:
        name = str(key)
        upload_id = f"{name}.{job_id}.{next(self._numbers)}"  # unique, like S3's upload ids
        with self._lock:
            self.staged[upload_id] = StagedUpload(name)
        return InMemoryUpload(self, upload_id, name)

    def complete(self, handle: dict[str, Any], manifest: dict[str, Any]) -> None:
        name = handle["key"]
        with self._lock:
            staged = self.staged.get(handle["upload_id"])
            if staged is not None:
                if not staged.closed:
                    raise StorageError(f"The upload of {name} is still being written.")
                self.objects[name] = bytes(self.staged.pop(handle["upload_id"]).data)
            elif name not in self.objects:
                raise StorageError(f"The staged data of {name} is gone: it was discarded.")
            size = len(self.objects[name])
            if size != manifest["size"]:  # left uncommitted: ``abort`` removes it
                raise StorageError(
                    f"{size} bytes are stored at {name}, {manifest['size']} were written."
                )
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            self.objects[name + MANIFEST_SUFFIX] = data

    def discard(self, upload_id: str) -> None:
        """Drop a staged upload, and only that: what ``Upload.abort`` does."""
        with self._lock:
            self.staged.pop(upload_id, None)

    def abort(self, handle: dict[str, Any]) -> None:
        name = handle["key"]
        with self._lock:
            self.staged.pop(handle["upload_id"], None)
            if name + MANIFEST_SUFFIX not in self.objects:
                self.objects.pop(name, None)  # completed but never committed: not a dump

    def _json_names(self, database: str | None) -> list[str]:
        folder = f"{database}/" if database else ""
        with self._lock:
            names = list(self.objects)
        return [name for name in names if name.startswith(folder) and name.endswith(".json")]

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.objects[name] = json.dumps(data, indent=2, sort_keys=True).encode()

    def _read_bytes(self, name: str, limit: int) -> bytes:
        try:
            return self.objects[name][: limit + 1]
        except KeyError:
            raise DumpNotFound(
                f"No complete dump {name.removesuffix(MANIFEST_SUFFIX)!r}."
            ) from None

    def data_size(self, key: keys.DumpKey) -> int:
        return len(self._data(key))

    def open(self, key: keys.DumpKey) -> BinaryIO:
        return io.BytesIO(self._data(key))

    def delete(self, key: keys.DumpKey) -> None:
        with self._lock:
            self.objects.pop(f"{key}{MANIFEST_SUFFIX}", None)
            self.objects.pop(str(key), None)
            self.objects.pop(f"{key}{TRIAL_SUFFIX}", None)

    def _data(self, key: keys.DumpKey) -> bytes:
        try:
            return self.objects[str(key)]
        except KeyError:
            raise DumpNotFound(f"The data of dump {str(key)!r} is missing.") from None
