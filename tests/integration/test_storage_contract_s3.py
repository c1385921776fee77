"""The storage contract (tests/storage_contract.py) on S3, against the moto server:
the same checks the in-memory twin and the local folder pass in tests/unit."""

from __future__ import annotations

from typing import Any

import pytest

from pgclone.storage import storage_for
from pgclone.storage.base import Storage
from tests import storage_contract as contract
from tests.helpers import s3_client


class S3Backend:
    """A fresh bucket's prefix, seen through boto3 directly for the raw view."""

    def __init__(self, location: str, endpoint: str) -> None:
        self.location = location
        self.bucket, _, prefix = location.removeprefix("s3://").partition("/")
        self.prefix = f"{prefix.strip('/')}/"
        self.client: Any = s3_client(endpoint)

    def storage(self) -> Storage:
        return storage_for(self.location)  # a new object each time, as each step makes

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)

    def remove(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)

    def names(self) -> set[str]:
        """Objects, and multipart uploads not completed or aborted (a staged dump
        S3 would keep, and bill, until someone aborts it)."""
        objects = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        return {item["Key"].removeprefix(self.prefix) for item in objects.get("Contents", [])} | {
            f"upload:{item['Key'].removeprefix(self.prefix)}" for item in uploads.get("Uploads", [])
        }


@pytest.mark.parametrize("check", contract.cases("s3"))
def test_s3_storage_keeps_the_contract(
    check: contract.Check, s3_location: str, moto_server: str
) -> None:
    check(S3Backend(s3_location, moto_server))
