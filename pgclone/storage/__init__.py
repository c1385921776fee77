"""Where dumps live: a local folder or S3, behind one interface."""

from __future__ import annotations

import os
import re

from pgclone import conf
from pgclone.exceptions import ConfigurationError
from pgclone.storage.base import DumpInfo, Storage, Upload

__all__ = ["DumpInfo", "Storage", "Upload", "get_storage", "storage_for"]


# As permissive as boto3's own check of bucket names (botocore.handlers.VALID_BUCKET,
# which also takes access point ARNs and checks those itself), and no shorter than S3
# allows: S3 judges the rest, with a clear answer.
_BUCKET = re.compile(r"^[A-Za-z0-9._-]{3,255}$")


def storage_for(location: str) -> Storage:
    """The storage for a location: ``s3://bucket[/prefix]`` or a folder."""
    if not isinstance(location, str) or not location.strip():
        raise ConfigurationError(
            f"PGCLONE_STORAGE_LOCATION is {location!r}, which names no place for dumps "
            "(an empty folder path would put them among the project's own files): set it "
            "to a folder of their own, such as '.pgclone/', or to s3://BUCKET/PREFIX."
        )
    if location.startswith("s3://"):
        from pgclone.storage.s3 import S3Storage

        bucket, _, prefix = location[len("s3://") :].partition("/")
        _check_bucket(location, bucket)
        return S3Storage(bucket, prefix)
    if "://" in location or location.lower().startswith(("s3:", "s3/")):
        raise ConfigurationError(
            f"PGCLONE_STORAGE_LOCATION {location!r} is neither a folder nor an S3 location: "
            "write s3://BUCKET/PREFIX (lower case, two slashes) or a folder path."
        )
    from pgclone.storage.local import LocalStorage

    path = os.path.expanduser(location)
    if not os.path.isabs(path):
        path = os.path.join(conf.base_dir() or os.getcwd(), path)
    return LocalStorage(path)


def _check_bucket(location: str, bucket: str) -> None:
    if not bucket:
        problem = "names no bucket"
    elif len(bucket) < 3:
        problem = f"names the bucket {bucket!r}, but bucket names have at least 3 characters"
    elif not _BUCKET.match(bucket) and not bucket.startswith("arn:"):
        problem = (
            f"names the bucket {bucket!r}, but bucket names have only letters, digits, "
            "'.', '-' and '_' (at most 255)"
        )
    else:
        return
    raise ConfigurationError(
        f"PGCLONE_STORAGE_LOCATION {location!r} {problem}: write s3://BUCKET/PREFIX with "
        "your bucket's name as S3 shows it."
    )


def get_storage() -> Storage:
    return storage_for(conf.storage_location())
