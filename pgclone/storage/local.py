"""Dumps in a folder on this machine (or a folder every worker mounts)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from pgclone.exceptions import DumpNotFound, StorageError
from pgclone.storage import keys
from pgclone.storage.base import MANIFEST_SUFFIX, TRIAL_SUFFIX, Storage, Upload

# Dumps hold the whole database: only the owner (the user pgclone runs as) may
# read them. Modes are set explicitly, whatever the process's umask.
FILE_MODE = 0o600
FOLDER_MODE = 0o700


def make_folders(path: Path) -> None:
    """Create ``path`` and whatever parents it lacks, each owner-only; folders that
    already exist are left as they are."""
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is cut by the umask


def open_private(path: Path, mode: str = "wb") -> Any:
    """A new (or truncated) file for writing, readable and writable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through os.open
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON file whole and durable, or not at all (OSError)."""
    temporary = path.with_name(f".{path.name}.tmp")
    replaced = False
    try:
        with open_private(temporary, "w") as out:
            out.write(json.dumps(data, indent=2, sort_keys=True))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        replaced = True
        _fsync_dir(path.parent)
    except OSError:
        temporary.unlink(missing_ok=True)
        if replaced:  # not known to be on disk
            path.unlink(missing_ok=True)
        raise


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write a manifest, the mark of a complete dump: whole and durable, or not at all."""
    try:
        _write_json(path, manifest)
    except OSError as exc:
        raise StorageError(
            f"Could not write the manifest {path}: {exc.strerror or exc}. The dump is "
            "not complete and is not listed; make room (or fix the folder's permissions) "
            "and dump again."
        ) from exc


class LocalUpload(Upload):
    def __init__(self, staged: Path, final: Path) -> None:
        self.staged = staged
        self.final = final
        make_folders(staged.parent)
        self._file = open_private(staged)  # closed in close()/abort()

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise StorageError(f"Could not write {self.staged}: {exc.strerror or exc}") from exc

    @property
    def handle(self) -> dict[str, Any]:
        return {"staged": str(self.staged), "final": str(self.final)}

    def close(self) -> dict[str, Any]:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self.abort()
            raise StorageError(f"Could not write {self.staged}: {exc.strerror or exc}") from exc
        return self.handle

    def abort(self) -> None:
        self._file.close()
        self.staged.unlink(missing_ok=True)


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.location = str(self.root)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise StorageError(f"{name!r} points outside the storage folder {self.root}.")
        return path

    def check(self) -> None:
        try:
            make_folders(self.root)
        except OSError as exc:
            raise StorageError(
                f"Can't create the dump folder {self.root}: {exc.strerror or exc}. "
                "Fix PGCLONE_STORAGE_LOCATION or the folder's permissions."
            ) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(
                f"The dump folder {self.root} is not writable by this process "
                f"(uid {os.getuid()}): fix its permissions or PGCLONE_STORAGE_LOCATION."
            )

    def start_upload(self, key: keys.DumpKey, job_id: str, expected_size: int = 0) -> LocalUpload:
        self.check()
        final = self._path(str(key))
        staged = final.with_name(f".{final.name}.{job_id}.partial")
        return LocalUpload(staged, final)

    def complete(self, handle: dict[str, Any], manifest: dict[str, Any]) -> None:
        staged, final = Path(handle["staged"]), Path(handle["final"])
        if staged.exists():
            try:
                os.replace(staged, final)
            except OSError as exc:
                raise StorageError(
                    f"Could not move {staged} to {final}: {exc.strerror or exc}."
                ) from exc
        elif not final.exists():
            raise StorageError(
                f"The dump written by the previous step is not at {staged}. With local "
                "storage every worker must see the same folder (a shared mount); "
                "otherwise use S3 storage."
            )
        size = final.stat().st_size
        if size != manifest["size"]:  # never commit what is not what was written
            raise StorageError(f"{final} holds {size} bytes but {manifest['size']} were written.")
        # The data stays at its key: a retried step finds it there, a cleanup removes it.
        _write_manifest(final.with_name(final.name + MANIFEST_SUFFIX), manifest)

    def abort(self, handle: dict[str, Any]) -> None:
        Path(handle["staged"]).unlink(missing_ok=True)
        final = Path(handle["final"])
        if not final.with_name(final.name + MANIFEST_SUFFIX).exists():
            final.unlink(missing_ok=True)  # moved but never committed: not a dump

    def _json_names(self, database: str | None) -> list[str]:
        folder = self._path(database) if database else None  # never a folder outside root
        if not self.root.is_dir():
            return []
        folders = [folder] if folder else list(self.root.iterdir())
        names = []
        for folder in folders:
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            for entry in folder.iterdir():
                # The manifest is the commit marker: a dump whose data went missing
                # is listed, and fails clearly when used, as in S3.
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    names.append(f"{folder.name}/{entry.name}")
        return names

    def _read_bytes(self, name: str, limit: int) -> bytes:
        try:
            with self._path(name).open("rb") as file:
                return file.read(limit + 1)
        except FileNotFoundError as exc:
            raise DumpNotFound(f"No complete dump {name.removesuffix(MANIFEST_SUFFIX)!r}.") from exc

    def data_size(self, key: keys.DumpKey) -> int:
        try:
            return self._path(str(key)).stat().st_size
        except FileNotFoundError as exc:
            raise DumpNotFound(f"The data of dump {str(key)!r} is missing.") from exc

    def open(self, key: keys.DumpKey) -> BinaryIO:
        try:
            return open(self._path(str(key)), "rb")
        except FileNotFoundError as exc:
            raise DumpNotFound(f"The data of dump {str(key)!r} is missing.") from exc

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        path = self._path(name)
        try:
            _write_json(path, data)
        except OSError as exc:
            raise StorageError(f"Could not write {path}: {exc.strerror or exc}.") from exc

    def delete(self, key: keys.DumpKey) -> None:
        final = self._path(str(key))
        with contextlib.suppress(FileNotFoundError):
            final.with_name(final.name + MANIFEST_SUFFIX).unlink()
        final.unlink(missing_ok=True)
        final.with_name(final.name + TRIAL_SUFFIX).unlink(missing_ok=True)
