"""The storage contract shared by the local folder and S3.

A dump is written in two phases so that it is never visible half-written:

1. ``start_upload`` returns an :class:`Upload`; its ``close`` leaves the data
   *staged* (a hidden file, an uncompleted S3 multipart upload) and returns a
   JSON-able handle that the job records.
2. ``complete(handle, manifest)`` moves the data under its final key and then
   writes the manifest ``KEY.json`` beside it. The manifest is the commit
   marker: listing and reading only see keys whose manifest exists.

Listing (``infos``) also judges each manifest where it is stored
(``signing.examine``): one refused there (a wrong or missing signature, signed
fields that are another key's, a key timestamped in the future) is listed as
damaged, as an unreadable one is, and never used.

A trial restore (``verify --restore``) leaves its outcome beside the dump as
``KEY.trial.json``, never in the manifest (whose signature covers it); it goes
when the dump goes.

The two phases are separate chain steps; the handle, not a local file, is
what passes from one to the other.
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

from pgclone.exceptions import DumpDamaged, DumpNotFound, InvalidInput
from pgclone.humanize import human_bytes
from pgclone.storage import keys, signing

MANIFEST_SUFFIX = ".json"
TRIAL_SUFFIX = ".trial.json"
# A manifest or a trial record is a few KiB: whoever can write to the storage
# must not make pgclone read gigabytes to list it.
MAX_RECORD_BYTES = 16 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DumpInfo:
    key: keys.DumpKey
    manifest: dict[str, Any]
    damaged: str = ""  # why the manifest can't be used: such a dump is never restored
    trial: dict[str, Any] | None = None  # the last trial restore's record, if any
    signed: bool = False  # its signature checked with a configured key

    @property
    def size(self) -> int:
        return int(self.manifest.get("size", 0))

    @property
    def size_text(self) -> str:
        """In binary units, as the command shows it."""
        return human_bytes(self.size)


def _damaged(key: keys.DumpKey, problem: str) -> DumpDamaged:
    return DumpDamaged(
        f"The manifest of dump {key} is damaged: {problem}. The dump can't be verified "
        "or restored: restore another one (`manage.py pgclone ls` lists them), and remove "
        f"this one and its manifest {key}{MANIFEST_SUFFIX} from the storage."
    )


def _parse_record(data: bytes) -> Any:
    """A manifest's or trial record's JSON; ValueError saying what it is instead:
    "not JSON (…)", "larger than 16 MiB", "nested too deeply to be read"."""
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(f"larger than {human_bytes(MAX_RECORD_BYTES)}")
    try:
        return json.loads(data)
    except RecursionError:  # "[[[[…" a few hundred KB long
        raise ValueError("nested too deeply to be read") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ValueError(f"not JSON ({exc})") from None


def _manifest_problem(manifest: dict[str, Any]) -> str:
    """What makes a parsed manifest unusable, or "" when it has what reading a dump needs."""
    missing = [field for field in ("size", "sha256") if field not in manifest]
    if missing:
        return f"it has no {' and no '.join(missing)}"
    size, sha256 = manifest["size"], manifest["sha256"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return f"its size {size!r} is not a number of bytes"
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        return f"its sha256 {sha256!r} is not a SHA-256 digest in hexadecimal"
    return ""


class Upload(abc.ABC):
    """A staged, write-only object."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @property
    @abc.abstractmethod
    def handle(self) -> dict[str, Any]:
        """A JSON-able handle that ``Storage.abort`` takes, valid from the start:
        a job records it at once, so cleanup can discard a dump cut short."""

    @abc.abstractmethod
    def close(self) -> dict[str, Any]:
        """Finish writing; return the handle that ``Storage.complete`` takes."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Throw away everything written so far."""


class Storage(abc.ABC):
    location: str

    @abc.abstractmethod
    def check(self) -> None:
        """Raise StorageError unless the storage can be written to."""

    @abc.abstractmethod
    def start_upload(self, key: keys.DumpKey, job_id: str, expected_size: int = 0) -> Upload:
        """Start writing a dump; ``expected_size`` helps S3 pick its part size."""

    @abc.abstractmethod
    def complete(self, handle: dict[str, Any], manifest: dict[str, Any]) -> None:
        """Make a staged upload visible under its key, with its manifest. Idempotent."""

    @abc.abstractmethod
    def abort(self, handle: dict[str, Any]) -> None:
        """Discard a staged upload. Idempotent."""

    @abc.abstractmethod
    def _json_names(self, database: str | None) -> list[str]:
        """Names (relative to the root) of every object ending in ``.json`` (the
        manifests and the records beside them), for one database or all."""

    @abc.abstractmethod
    def _read_bytes(self, name: str, limit: int) -> bytes:
        """Read a small object, ``limit`` bytes at most (and one more, which says
        that it is larger); raise DumpNotFound if it is missing."""

    @abc.abstractmethod
    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        """Write a small JSON object beside a dump: whole, or not at all."""

    @abc.abstractmethod
    def data_size(self, key: keys.DumpKey) -> int:
        """Size of a dump's stored data; raise DumpNotFound if it is missing."""

    @abc.abstractmethod
    def open(self, key: keys.DumpKey) -> BinaryIO:
        """A readable stream of a dump's data."""

    @abc.abstractmethod
    def delete(self, key: keys.DumpKey) -> None:
        """Remove a dump: its manifest first, so it stops being listed at once."""

    def list_keys(self, database: str | None = None) -> list[keys.DumpKey]:
        """Complete dumps, oldest first."""
        return self._keys(self._json_names(database), database)

    @staticmethod
    def _keys(names: list[str], database: str | None) -> list[keys.DumpKey]:
        found = []
        for name in names:
            if not name.endswith(keys.SUFFIX + MANIFEST_SUFFIX):
                continue  # a record beside a dump
            try:
                key = keys.parse_key(name[: -len(MANIFEST_SUFFIX)])
            except InvalidInput:
                continue  # not ours: someone else's object under the same prefix
            if database is None or key.database == database:
                found.append(key)
        return sorted(found)

    def read_manifest(self, key: keys.DumpKey) -> dict[str, Any]:
        """A dump's manifest; DumpNotFound without one, DumpDamaged if it is unusable."""
        data = self._read_bytes(f"{key}{MANIFEST_SUFFIX}", MAX_RECORD_BYTES)
        try:
            manifest = _parse_record(data)
        except ValueError as exc:
            raise _damaged(key, f"it is {exc}") from None
        if not isinstance(manifest, dict):
            raise _damaged(key, f"it holds a JSON {type(manifest).__name__}, not an object")
        problem = _manifest_problem(manifest)
        if problem:
            raise _damaged(key, problem)
        return manifest

    def complete_manifest(self, key: keys.DumpKey) -> dict[str, Any]:
        """The manifest of a dump whose stored data has the size it recorded.

        Raises DumpNotFound without a manifest, DumpDamaged when the sizes differ.
        """
        manifest = self.read_manifest(key)
        stored = self.data_size(key)
        if stored != manifest.get("size"):
            raise DumpDamaged(
                f"Dump {key} is incomplete or damaged: {stored} bytes stored, "
                f"{manifest.get('size')} recorded when it was made."
            )
        return manifest

    def _judged(
        self, key: keys.DumpKey, trial: dict[str, Any] | None, now: dt.datetime | None
    ) -> DumpInfo:
        try:
            manifest = self.read_manifest(key)
        except DumpDamaged as exc:
            return DumpInfo(key, {}, damaged=str(exc), trial=trial)
        refused, signed = signing.examine(key, manifest, now)
        if refused:  # nothing it says is to be believed: shown only with why
            return DumpInfo(key, {}, damaged=refused, trial=trial)
        return DumpInfo(key, manifest, trial=trial, signed=signed)

    def info(self, key: keys.DumpKey) -> DumpInfo:
        """One dump; DumpDamaged if its manifest is damaged or refused where it is stored."""
        manifest = self.read_manifest(key)
        refused, signed = signing.examine(key, manifest)
        if refused:
            raise DumpDamaged(refused)
        return DumpInfo(key, manifest, trial=self.trial(key), signed=signed)

    def infos(self, database: str | None = None, now: dt.datetime | None = None) -> list[DumpInfo]:
        """Complete dumps with their manifests and last trial restores, oldest
        first; one whose manifest is damaged or refused where it is stored comes
        with why (it is listed, and never restored, counted or taken as newest)."""
        names = self._json_names(database)
        tried = {name[: -len(TRIAL_SUFFIX)] for name in names if name.endswith(TRIAL_SUFFIX)}
        return [
            self._judged(key, self.trial(key) if str(key) in tried else None, now)
            for key in self._keys(names, database)
        ]

    def record_trial(self, key: keys.DumpKey, record: dict[str, Any]) -> None:
        """Keep a trial restore's outcome beside the dump (replacing the last one)."""
        self._write_json(f"{key}{TRIAL_SUFFIX}", record)

    def trial(self, key: keys.DumpKey) -> dict[str, Any] | None:
        """The record of the dump's last trial restore; None without one. A record
        that can't be read says so in its ``problem``, and counts as no proof."""
        try:
            data = self._read_bytes(f"{key}{TRIAL_SUFFIX}", MAX_RECORD_BYTES)
        except DumpNotFound:
            return None
        try:
            record = _parse_record(data)
        except ValueError as exc:
            return {"problem": f"the record is {exc}"}
        if not isinstance(record, dict):
            return {"problem": "the record is not a JSON object"}
        return record
