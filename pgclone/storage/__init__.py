"""Where dumps live: a local folder or S3, behind one interface."""

from __future__ import annotations

import os

from pgclone import conf
from pgclone.exceptions import ConfigurationError
from pgclone.storage.base import DumpInfo, Storage, Upload

__all__ = ["DumpInfo", "Storage", "Upload", "get_storage", "storage_for"]


def storage_for(location: str) -> Storage:
    """The storage for a location: ``s3://bucket[/prefix]`` or a folder."""
    if location.startswith("s3://"):
        from pgclone.storage.s3 import S3Storage

        bucket, _, prefix = location[len("s3://") :].partition("/")
        if len(bucket) < 3:
            raise ConfigurationError(
                f"PGCLONE_STORAGE_LOCATION {location!r} names no valid bucket: "
                "use s3://BUCKET/PREFIX."
            )
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


def get_storage() -> Storage:
    return storage_for(conf.storage_location())
