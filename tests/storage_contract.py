"""What every dump storage must do, as plain functions run against each one.

Each check takes a :class:`Backend`: a factory of storages on one empty place
plus raw access to that place (to plant a damaged manifest, or to see what an
abort left behind), as the storage's own tools would give it. The test modules
run every check in ``CHECKS`` against the in-memory twin and the local folder
(tests/unit) and against S3 on a moto server (tests/integration).

A storage that is known to behave otherwise is listed in ``DIFFERENCES``: its
checks are run as strict xfails, so the difference stays visible and the mark
has to go when it is fixed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pytest

from pgclone.exceptions import DumpDamaged, DumpNotFound, StorageError
from pgclone.storage import keys
from pgclone.storage.base import MANIFEST_SUFFIX, TRIAL_SUFFIX, Storage
from pgclone.storage.local import LocalStorage
from pgclone.testing import InMemoryStorage

MOMENT = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
KEY = keys.make_key("shop", "default", MOMENT)
OTHER = keys.make_key("shop", "default", MOMENT + dt.timedelta(hours=1))
DATA = bytes(range(256)) * 1_000 + b"tail"  # not a multiple of any chunk size used below


class Backend(Protocol):
    """One empty place that dumps can be stored in."""

    def storage(self) -> Storage:
        """A storage on this place. May be a new object at each call, as each chain
        step (and the sweep) makes its own: what one wrote, the next must find."""

    def put(self, name: str, data: bytes) -> None:
        """Store an object under ``name`` (relative to the root), bypassing the storage."""

    def remove(self, name: str) -> None:
        """Remove the object ``name``, bypassing the storage."""

    def names(self) -> set[str]:
        """Everything the place holds, staged uploads included (named as the
        backend likes): what a user would find there, and must not find left over."""


Check = Callable[[Backend], None]


class MemoryBackend:
    def __init__(self) -> None:
        self.place = InMemoryStorage()

    def storage(self) -> Storage:
        return self.place  # one instance is one place

    def put(self, name: str, data: bytes) -> None:
        self.place.objects[name] = data

    def remove(self, name: str) -> None:
        del self.place.objects[name]

    def names(self) -> set[str]:
        return set(self.place.objects) | {f"upload:{name}" for name in self.place.staged}


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def storage(self) -> Storage:
        return LocalStorage(self.root)

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def remove(self, name: str) -> None:
        (self.root / name).unlink()

    def names(self) -> set[str]:
        if not self.root.exists():
            return set()
        return {str(path.relative_to(self.root)) for path in self.root.rglob("*") if path.is_file()}


# Helpers ------------------------------------------------------------------------------


def manifest_for(key: keys.DumpKey, data: bytes) -> dict[str, Any]:
    return {"key": str(key), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def stage(storage: Storage, key: keys.DumpKey, data: bytes, job_id: str = "job-1") -> Any:
    """An upload with ``data`` written to it in uneven chunks, still open."""
    upload = storage.start_upload(key, job_id, expected_size=len(data))
    for start in range(0, len(data), 70_001):
        upload.write(data[start : start + 70_001])
    return upload


def json_round_trip(handle: dict[str, Any]) -> dict[str, Any]:
    """The handle as the next step reads it back from the job's JSON result."""
    copied = json.loads(json.dumps(handle))
    assert copied == handle
    return copied


def store(backend: Backend, key: keys.DumpKey, data: bytes) -> dict[str, Any]:
    """A complete dump, made as the dump and upload steps make one; its manifest."""
    handle = json_round_trip(stage(backend.storage(), key, data).close())
    manifest = manifest_for(key, data)
    backend.storage().complete(handle, manifest)
    return manifest


def read(stream: BinaryIO, chunk: int) -> bytes:
    parts = []
    while part := stream.read(chunk):
        assert len(part) <= chunk
        parts.append(part)
    return b"".join(parts)


def assert_absent(storage: Storage, key: keys.DumpKey) -> None:
    """Nothing can be read of ``key``: every reader says DumpNotFound."""
    assert key not in storage.list_keys()
    assert key not in storage.list_keys(key.database)
    for reader in (
        storage.read_manifest,
        storage.complete_manifest,
        storage.info,
        storage.data_size,
        storage.open,
    ):
        with pytest.raises(DumpNotFound):
            reader(key)


def assert_complete(storage: Storage, key: keys.DumpKey, data: bytes, manifest: dict) -> None:
    assert key in storage.list_keys() and key in storage.list_keys(key.database)
    assert storage.read_manifest(key) == manifest
    assert storage.complete_manifest(key) == manifest
    info = storage.info(key)
    assert (info.key, info.manifest, info.damaged, info.size) == (key, manifest, "", len(data))
    assert storage.data_size(key) == len(data)
    with storage.open(key) as stream:
        assert read(stream, 65_536) == data
    with storage.open(key) as stream:  # a second reader starts at the beginning again
        assert stream.read() == data


def files_of(*dumps: keys.DumpKey) -> set[str]:
    return {name for key in dumps for name in (str(key), f"{key}{MANIFEST_SUFFIX}")}


# The checks ---------------------------------------------------------------------------


def storage_is_usable(backend: Backend) -> None:
    storage = backend.storage()
    assert isinstance(storage.location, str) and storage.location
    storage.check()
    assert storage.list_keys() == [] and storage.list_keys("shop") == []


def staged_upload_is_invisible_until_completed(backend: Backend) -> None:
    """The manifest is the commit marker: before ``complete`` nothing can be read,
    whether the upload is open or closed; after it, everything can, and no staged
    leftover remains."""
    upload = stage(backend.storage(), KEY, DATA)
    assert_absent(backend.storage(), KEY)
    handle = json_round_trip(upload.close())
    assert_absent(backend.storage(), KEY)
    staged = backend.names()
    assert staged and not staged & files_of(KEY)  # held somewhere, not under the key yet

    manifest = manifest_for(KEY, DATA)
    backend.storage().complete(handle, manifest)

    assert backend.storage().list_keys() == [KEY]
    assert_complete(backend.storage(), KEY, DATA, manifest)
    assert backend.names() == files_of(KEY)


def complete_is_idempotent(backend: Backend) -> None:
    """A redelivered upload step completes the same handle again."""
    handle = json_round_trip(stage(backend.storage(), KEY, DATA).close())
    manifest = manifest_for(KEY, DATA)
    backend.storage().complete(handle, manifest)
    backend.storage().complete(handle, manifest)
    assert backend.storage().list_keys() == [KEY]
    assert_complete(backend.storage(), KEY, DATA, manifest)
    assert backend.names() == files_of(KEY)


def handle_from_the_start_discards_an_open_upload(backend: Backend) -> None:
    """The dump step records ``upload.handle`` before writing: after a crash, a
    sweep discards the half-written dump with it alone."""
    upload = backend.storage().start_upload(KEY, "job-1", expected_size=len(DATA))
    handle = json_round_trip(upload.handle)
    upload.write(DATA[:1000])
    assert backend.names()  # what "nothing left" below is measured against
    backend.storage().abort(handle)
    assert backend.names() == set()
    assert_absent(backend.storage(), KEY)
    upload.abort()  # the writer's own cleanup, later: harmless
    backend.storage().abort(handle)
    assert backend.names() == set()


def upload_abort_discards(backend: Backend) -> None:
    upload = stage(backend.storage(), KEY, DATA)
    upload.abort()
    assert backend.names() == set()
    backend.storage().abort(json_round_trip(upload.handle))  # the sweep, later: harmless
    assert backend.names() == set()
    assert_absent(backend.storage(), KEY)


def abort_discards_a_closed_upload(backend: Backend) -> None:
    handle = json_round_trip(stage(backend.storage(), KEY, DATA).close())
    backend.storage().abort(handle)
    backend.storage().abort(handle)  # idempotent
    assert backend.names() == set()
    assert_absent(backend.storage(), KEY)


def complete_after_abort_fails(backend: Backend) -> None:
    """The upload step must not commit a manifest for data that was discarded."""
    handle = json_round_trip(stage(backend.storage(), KEY, DATA).close())
    backend.storage().abort(handle)
    with pytest.raises(StorageError):
        backend.storage().complete(handle, manifest_for(KEY, DATA))
    assert backend.names() == set()
    assert_absent(backend.storage(), KEY)


def abort_keeps_a_completed_dump(backend: Backend) -> None:
    """A crash between ``complete`` and forgetting the handle: the sweep's abort
    must leave the committed dump alone."""
    handle = json_round_trip(stage(backend.storage(), KEY, DATA).close())
    manifest = manifest_for(KEY, DATA)
    backend.storage().complete(handle, manifest)
    backend.storage().abort(handle)
    assert_complete(backend.storage(), KEY, DATA, manifest)
    assert backend.names() == files_of(KEY)


def abort_removes_data_left_without_manifest(backend: Backend) -> None:
    """Data moved under its key whose manifest never got written is not a dump:
    abort removes it."""
    handle = json_round_trip(stage(backend.storage(), KEY, DATA).close())
    backend.storage().complete(handle, manifest_for(KEY, DATA))
    backend.remove(f"{KEY}{MANIFEST_SUFFIX}")  # as if writing it had failed
    assert backend.storage().list_keys() == []
    with pytest.raises(DumpNotFound):
        backend.storage().read_manifest(KEY)
    backend.storage().abort(handle)
    assert backend.names() == set()


def another_upload_of_the_key_is_kept_apart(backend: Backend) -> None:
    """Two jobs staging the same key: discarding one leaves the other's dump whole."""
    kept = stage(backend.storage(), KEY, DATA, job_id="job-a")
    dropped = stage(backend.storage(), KEY, b"other bytes", job_id="job-b")
    kept_handle, dropped_handle = kept.close(), dropped.close()
    manifest = manifest_for(KEY, DATA)
    backend.storage().complete(kept_handle, manifest)
    backend.storage().abort(dropped_handle)
    assert_complete(backend.storage(), KEY, DATA, manifest)
    assert backend.names() == files_of(KEY)


def complete_refuses_data_of_another_size(backend: Backend) -> None:
    """A manifest recording a size other than what was stored is never committed:
    the dump stays unlisted, and the cleanup's abort removes its data."""
    handle = json_round_trip(stage(backend.storage(), KEY, DATA).close())
    wrong = {**manifest_for(KEY, DATA), "size": len(DATA) + 1}
    with pytest.raises(StorageError):
        backend.storage().complete(handle, wrong)
    assert backend.storage().list_keys() == []
    backend.storage().abort(handle)
    assert backend.names() == set()


def list_keys_sorts_and_filters_by_database(backend: Backend) -> None:
    """Sorted by database, then oldest first (then config); a database filter is
    exact, never a prefix of a longer name."""
    early = MOMENT - dt.timedelta(days=1)
    shop_weekly = keys.make_key("shop", "weekly", MOMENT)
    shop_eu = keys.make_key("shop-eu", "default", early)
    abc = keys.make_key("abc", "default", MOMENT + dt.timedelta(days=3))
    for key in (OTHER, shop_eu, shop_weekly, abc, KEY):  # stored out of order
        store(backend, key, str(key).encode())
    storage = backend.storage()
    assert storage.list_keys() == [abc, KEY, shop_weekly, OTHER, shop_eu]
    assert storage.list_keys("shop") == [KEY, shop_weekly, OTHER]
    assert storage.list_keys("shop-eu") == [shop_eu]
    assert storage.list_keys("sho") == [] and storage.list_keys("nobody") == []


def list_keys_ignores_what_is_not_a_dump(backend: Backend) -> None:
    """Other objects under the same root, and data without a manifest, are not listed."""
    manifest = store(backend, KEY, DATA)
    uncommitted = str(OTHER)
    foreign = {
        "shop/notes.txt": b"hello",
        "shop/notes.json": b"{}",
        "shop/not-a-key.dump": b"x",
        "shop/not-a-key.dump.json": json.dumps(manifest).encode(),
        "shop/20261399T000000.000000Z.default.dump": b"x",  # month 13
        "shop/20261399T000000.000000Z.default.dump.json": json.dumps(manifest).encode(),
        "loose.dump": b"x",
        "loose.dump.json": json.dumps(manifest).encode(),
        uncommitted: DATA,
    }
    for name, data in foreign.items():
        backend.put(name, data)
    assert backend.storage().list_keys() == [KEY]
    assert backend.storage().list_keys("shop") == [KEY]
    assert backend.names() == files_of(KEY) | set(foreign)


def missing_manifest_is_not_found(backend: Backend) -> None:
    assert_absent(backend.storage(), KEY)
    store(backend, OTHER, DATA)  # a neighbour changes nothing
    assert_absent(backend.storage(), KEY)


DAMAGED_MANIFESTS = {
    "not JSON": b'{"size": 3, ',
    "not UTF-8": b"\xff\xfe\x00",
    "a JSON list": b"[3]",
    "no sha256": b'{"size": 3}',
    "a bool for size": json.dumps({"size": True, "sha256": "0" * 64}).encode(),
    "a negative size": json.dumps({"size": -1, "sha256": "0" * 64}).encode(),
    "a bad sha256": json.dumps({"size": 3, "sha256": "XYZ"}).encode(),
    "nested 200 000 deep": b"[" * 200_000,
    "larger than 16 MiB": b'{"size": 3, "pad": "' + b"x" * 16 * 2**20 + b'"}',
}


def damaged_manifest_is_damaged(backend: Backend) -> None:
    """The bytes the storage hands back are what was stored, so the base class's
    checks reject each kind of damage; the dump is still listed, never restored."""
    backend.put(str(KEY), b"abc")
    storage = backend.storage()
    for problem, payload in DAMAGED_MANIFESTS.items():
        backend.put(f"{KEY}{MANIFEST_SUFFIX}", payload)
        for reader in (storage.read_manifest, storage.complete_manifest, storage.info):
            with pytest.raises(DumpDamaged, match=re.escape(f"manifest of dump {KEY} is damaged")):
                reader(KEY)
        assert storage.list_keys() == [KEY], problem


def complete_manifest_checks_the_stored_size(backend: Backend) -> None:
    """The manifest reads fine, but the data is shorter than it recorded."""
    manifest = manifest_for(KEY, DATA)
    backend.put(str(KEY), DATA[:-1])
    backend.put(f"{KEY}{MANIFEST_SUFFIX}", json.dumps(manifest).encode())
    storage = backend.storage()
    assert storage.read_manifest(KEY) == manifest
    assert storage.data_size(KEY) == len(DATA) - 1
    with pytest.raises(DumpDamaged, match=f"{len(DATA) - 1} bytes stored, {len(DATA)} recorded"):
        storage.complete_manifest(KEY)


def manifest_without_data_is_not_found_for_reading(backend: Backend) -> None:
    manifest = manifest_for(KEY, DATA)
    backend.put(f"{KEY}{MANIFEST_SUFFIX}", json.dumps(manifest).encode())
    storage = backend.storage()
    assert storage.read_manifest(KEY) == manifest
    for reader in (storage.complete_manifest, storage.data_size, storage.open):
        with pytest.raises(DumpNotFound, match=r"data of dump .* is missing"):
            reader(KEY)


def manifest_without_data_is_listed(backend: Backend) -> None:
    """The manifest alone is the commit marker (storage/base.py's docstring): a dump
    whose data went missing stays listed, so ``ls`` shows it, retention can prune
    it and a restore of it fails saying its data is missing."""
    backend.put(f"{KEY}{MANIFEST_SUFFIX}", json.dumps(manifest_for(KEY, DATA)).encode())
    assert backend.storage().list_keys() == [KEY]
    assert backend.storage().list_keys("shop") == [KEY]


def delete_removes_one_dump(backend: Backend) -> None:
    store(backend, KEY, DATA)
    manifest = store(backend, OTHER, b"other dump")
    backend.storage().delete(KEY)
    assert backend.storage().list_keys() == [OTHER]
    assert_absent(backend.storage(), KEY)
    assert_complete(backend.storage(), OTHER, b"other dump", manifest)
    assert backend.names() == files_of(OTHER)
    backend.storage().delete(KEY)  # already gone: harmless
    backend.storage().delete(keys.make_key("nobody", "default", MOMENT))
    assert backend.names() == files_of(OTHER)


def delete_removes_data_without_manifest(backend: Backend) -> None:
    """Deleting a key whose manifest is gone still removes its data."""
    backend.put(str(KEY), DATA)
    backend.storage().delete(KEY)
    assert backend.names() == set()


def trial_record_lives_beside_its_dump(backend: Backend) -> None:
    """A trial restore's record is kept beside the dump: read back as written,
    replaced by the next one, never listed as a dump, shown by ``infos`` with its
    dump, and deleted with it."""
    store(backend, KEY, DATA)
    store(backend, OTHER, b"other dump")
    storage = backend.storage()
    assert storage.trial(KEY) is None
    storage.record_trial(KEY, {"outcome": "failed", "job_id": "a"})
    storage.record_trial(KEY, {"outcome": "passed", "job_id": "b"})
    assert storage.trial(KEY) == {"outcome": "passed", "job_id": "b"}
    assert storage.list_keys() == [KEY, OTHER]
    trials = {info.key: info.trial for info in storage.infos()}
    assert trials == {KEY: {"outcome": "passed", "job_id": "b"}, OTHER: None}
    assert storage.info(KEY).trial == {"outcome": "passed", "job_id": "b"}
    assert f"{KEY}{TRIAL_SUFFIX}" in backend.names()
    storage.delete(KEY)
    assert storage.trial(KEY) is None
    assert backend.names() == files_of(OTHER)


def damaged_trial_record_is_no_proof(backend: Backend) -> None:
    store(backend, KEY, DATA)
    for payload, problem in ((b"{not json", "not JSON"), (b"[1]", "not a JSON object")):
        backend.put(f"{KEY}{TRIAL_SUFFIX}", payload)
        assert problem in backend.storage().trial(KEY)["problem"]
        assert backend.storage().list_keys() == [KEY]


def infos_refuse_manifests_out_of_place(backend: Backend) -> None:
    """``infos`` judges each manifest where it is stored (pgclone.storage.signing): a signed
    manifest copied, bytes and all, under a later key of its database, and any
    key timestamped in the future, are listed as damaged, with why, and not as
    the dumps their keys name; ``info`` refuses them."""
    from django.test import override_settings

    from pgclone.storage import signing

    later = keys.make_key("shop", "default", MOMENT + dt.timedelta(days=1))
    future = keys.make_key("shop", "default", dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6))
    with override_settings(PGCLONE_SIGNING_KEY="contract-signing-key"):
        signed = signing.sign(
            {
                **manifest_for(KEY, DATA),
                "database": KEY.database,
                "config": KEY.config,
                "created": KEY.created.isoformat(),
            }
        )
        for key in (KEY, later):  # as a storage writer without the key copies it
            backend.put(str(key), DATA)
            backend.put(f"{key}{MANIFEST_SUFFIX}", json.dumps(signed).encode())
        storage = backend.storage()
        genuine, copied = storage.infos()
        assert (genuine.key, genuine.signed, genuine.damaged) == (KEY, True, "")
        assert copied.key == later and not copied.signed and copied.manifest == {}
        assert f"its signed manifest says key = {str(KEY)!r}" in copied.damaged
        with pytest.raises(DumpDamaged, match="copied or renamed in the storage"):
            storage.info(later)
    store(backend, future, DATA)  # signing off: the timestamp alone is refused
    listed = {info.key: info.damaged for info in backend.storage().infos()}
    assert "more than 5 minutes after this machine's clock" in listed[future]
    assert listed[KEY] == ""


CHECKS: list[Check] = [
    storage_is_usable,
    staged_upload_is_invisible_until_completed,
    complete_is_idempotent,
    handle_from_the_start_discards_an_open_upload,
    upload_abort_discards,
    abort_discards_a_closed_upload,
    complete_after_abort_fails,
    abort_keeps_a_completed_dump,
    abort_removes_data_left_without_manifest,
    another_upload_of_the_key_is_kept_apart,
    complete_refuses_data_of_another_size,
    list_keys_sorts_and_filters_by_database,
    list_keys_ignores_what_is_not_a_dump,
    missing_manifest_is_not_found,
    damaged_manifest_is_damaged,
    complete_manifest_checks_the_stored_size,
    manifest_without_data_is_not_found_for_reading,
    manifest_without_data_is_listed,
    delete_removes_one_dump,
    delete_removes_data_without_manifest,
    trial_record_lives_beside_its_dump,
    damaged_trial_record_is_no_proof,
    infos_refuse_manifests_out_of_place,
]

# Where a storage is known to break the contract: check -> why. Run as strict xfails.
DIFFERENCES: dict[str, Mapping[Check, str]] = {
    "memory": {},
    "local": {},
    "s3": {},
}


# What a check that does not hold raises; anything else (a crash) is no known difference.
FAILED = (AssertionError, pytest.fail.Exception)


def cases(storage_kind: str) -> list[Any]:
    """``CHECKS`` as pytest parameters, a known difference of ``storage_kind`` as a strict xfail."""
    differences = DIFFERENCES[storage_kind]
    return [
        pytest.param(
            check,
            id=check.__name__,
            marks=[pytest.mark.xfail(strict=True, raises=FAILED, reason=differences[check])]
            if check in differences
            else [],
        )
        for check in CHECKS
    ]
