"""The storage contract, the same for a local folder and S3 (moto server)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest

from pgclone.exceptions import DumpNotFound
from pgclone.storage import keys, storage_for
from pgclone.storage.s3 import MIN_PART_SIZE
from tests.helpers import s3_client

KEY = keys.make_key("shop", "default", dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC))


@pytest.fixture(params=["local", "s3"])
def location(request):
    return request.getfixturevalue(f"{request.param}_location")


def manifest_for(data: bytes) -> dict:
    return {"key": str(KEY), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_staged(storage, data: bytes, chunk: int = 1 << 20) -> dict:
    upload = storage.start_upload(KEY, "job-1", expected_size=len(data))
    for start in range(0, len(data), chunk):
        upload.write(data[start : start + chunk])
    return upload.close()


def test_a_dump_is_listed_only_once_completed(location):
    storage = storage_for(location)
    data = os.urandom(300_000)
    handle = write_staged(storage, data)
    assert storage.list_keys() == []
    with pytest.raises(DumpNotFound):
        storage.read_manifest(KEY)

    storage.complete(handle, manifest_for(data))
    storage.complete(handle, manifest_for(data))  # a redelivered step: harmless

    assert storage.list_keys() == [KEY] and storage.list_keys("shop") == [KEY]
    assert storage.list_keys("sho") == []
    assert storage.read_manifest(KEY)["sha256"] == hashlib.sha256(data).hexdigest()
    assert storage.data_size(KEY) == len(data)
    with storage.open(KEY) as stream:
        assert stream.read() == data

    storage.delete(KEY)
    assert storage.list_keys() == []


def test_an_aborted_dump_leaves_nothing(location, tmp_path):
    storage = storage_for(location)
    handle = write_staged(storage, b"half a dump")
    storage.abort(handle)
    storage.abort(handle)  # idempotent
    assert storage.list_keys() == []
    with pytest.raises(DumpNotFound):
        storage.data_size(KEY)


def test_large_s3_dumps_upload_in_numbered_parts(s3_location, moto_server):
    """Several parts in flight at once must each keep their own number."""
    storage = storage_for(s3_location)
    data = os.urandom(2 * MIN_PART_SIZE + 1_000_000)
    handle = write_staged(storage, data, chunk=3 << 20)
    assert [part["PartNumber"] for part in handle["parts"]] == [1, 2, 3]

    storage.complete(handle, manifest_for(data))

    with storage.open(KEY) as stream:
        assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(data).digest()
    bucket = s3_location.removeprefix("s3://").split("/")[0]
    assert s3_client(moto_server).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
