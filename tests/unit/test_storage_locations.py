"""PGCLONE_STORAGE_LOCATION values that name no usable place, and folders a
database name must not lead out of."""

from __future__ import annotations

import pytest

from pgclone.exceptions import ConfigurationError, StorageError
from pgclone.storage import storage_for
from pgclone.storage.local import LocalStorage
from pgclone.storage.s3 import S3Storage


@pytest.mark.parametrize("location", ["", "   ", None])
def test_an_empty_location_is_refused_rather_than_the_project_folder(location):
    with pytest.raises(ConfigurationError, match=r"such as '\.pgclone/', or to s3://BUCKET"):
        storage_for(location)


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("s3://Bad_Bucket!/x", "only letters, digits, '.', '-' and '_'"),
        ("s3://my bucket/x", "only letters, digits"),
        ("s3://ab", "at least 3 characters"),
        ("s3://ab/dumps", "at least 3 characters"),
        ("s3:///x", "names no bucket"),
        ("s3://", "names no bucket"),
        (f"s3://{'b' * 256}/x", "at most 255"),
    ],
)
def test_malformed_bucket_names_say_what_to_write(location, problem):
    with pytest.raises(ConfigurationError) as error:
        storage_for(location)
    assert problem in str(error.value)
    assert "write s3://BUCKET/PREFIX" in str(error.value)


@pytest.mark.parametrize(
    "bucket", ["abc", "my.bucket-1", "Legacy_Bucket", "b" * 255, "arn:aws:s3:eu-west-1:1:x"]
)
def test_bucket_names_boto3_accepts_are_accepted(bucket):
    """As permissive as botocore's own check: S3 judges the rest."""
    storage = storage_for(f"s3://{bucket}/dumps")
    assert isinstance(storage, S3Storage) and storage.bucket == bucket


@pytest.mark.parametrize("database", ["../outside", "/etc", ".", "shop/../.."])
def test_listing_a_database_never_leaves_the_dump_folder(tmp_path, database):
    root = tmp_path / "dumps"
    (root / "shop").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    with pytest.raises(StorageError, match="outside the storage folder"):
        LocalStorage(root).list_keys(database)


def test_listing_a_database_folder_inside_the_root_still_works(tmp_path):
    (tmp_path / "shop").mkdir()
    assert LocalStorage(tmp_path).list_keys("shop") == []
    assert LocalStorage(tmp_path).list_keys("nothing-yet") == []
