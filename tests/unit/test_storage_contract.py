"""The storage contract (tests/storage_contract.py) on the in-memory twin and on a
local folder; tests/integration/test_storage_contract_s3.py runs it on S3. No
service, no database: a temporary folder at most."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from pgclone.exceptions import StorageError
from pgclone.storage import keys
from pgclone.testing import InMemoryStorage
from tests import storage_contract as contract

KEY = contract.KEY


@pytest.mark.parametrize("check", contract.cases("memory"))
def test_in_memory_storage_keeps_the_contract(check: contract.Check) -> None:
    check(contract.MemoryBackend())


@pytest.mark.parametrize("check", contract.cases("local"))
def test_local_storage_keeps_the_contract(check: contract.Check, tmp_path: Path) -> None:
    check(contract.LocalBackend(tmp_path / "dumps"))


# What only the twin does: it is stricter than the real storages where they would
# let a test's mistake through silently.


def test_the_twin_refuses_to_complete_an_upload_still_being_written() -> None:
    """S3 can't complete an upload whose last part was never sent; a test that
    forgets ``close`` should fail as it would there."""
    storage = InMemoryStorage()
    upload = storage.start_upload(KEY, "job-1")
    upload.write(b"abc")
    with pytest.raises(StorageError, match="still being written"):
        storage.complete(upload.handle, contract.manifest_for(KEY, b"abc"))
    assert storage.list_keys() == []
    [staged] = storage.staged.values()
    assert staged.data == b"abc" and not staged.closed


@pytest.mark.parametrize(
    ("finish", "error"),
    [
        (lambda storage, upload: upload.close(), ValueError),
        (lambda storage, upload: storage.abort(upload.handle), StorageError),
    ],
    ids=["closed", "discarded"],
)
def test_the_twin_refuses_writes_to_a_finished_upload(
    finish: Callable[[InMemoryStorage, object], object], error: type[Exception]
) -> None:
    storage = InMemoryStorage()
    upload = storage.start_upload(KEY, "job-1")
    upload.write(b"abc")
    finish(storage, upload)
    with pytest.raises(error):
        upload.write(b"more")
    assert storage.objects == {}


def test_the_twin_gives_each_upload_its_own_id() -> None:
    """A redelivered dump step restarts with the same job id: the two uploads must
    not share staged bytes (S3 gives each its own upload id too)."""
    storage = InMemoryStorage()
    first, second = storage.start_upload(KEY, "job-1"), storage.start_upload(KEY, "job-1")
    first.write(b"first")
    second.write(b"second")
    assert first.handle["upload_id"] != second.handle["upload_id"]
    first.abort()
    handle = second.close()
    storage.complete(handle, contract.manifest_for(KEY, b"second"))
    with storage.open(KEY) as stream:
        assert stream.read() == b"second"


def test_reset_forgets_dumps_and_staged_uploads() -> None:
    backend = contract.MemoryBackend()
    storage = backend.place
    older = keys.make_key("shop", "default", contract.MOMENT - dt.timedelta(days=1))
    contract.store(backend, older, b"a dump")
    storage.start_upload(KEY, "job-2").write(b"half")
    assert storage.list_keys() == [older] and len(storage.staged) == 1
    storage.reset()
    assert storage.list_keys() == [] and storage.objects == {} and storage.staged == {}
