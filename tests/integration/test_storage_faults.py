"""Storage that fails half-way, for real: S3 gone mid-dump (a proxy that stops
answering in front of the moto server), a disk that fills up while the
manifest is written (a small tmpfs). For each: the job fails with the cause,
nothing half-made is listed, and what was left is discarded later."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from pgclone import api, starting
from pgclone.exceptions import StorageError
from pgclone.models import Job
from pgclone.steps import dump as dump_steps
from pgclone.storage import keys
from pgclone.storage.local import LocalStorage
from tests.faultproxy import FaultProxy
from tests.helpers import s3_client

pytestmark = pytest.mark.django_db(transaction=True)


# S3 gone mid-dump ----------------------------------------------------------------


def fill_secrets(rows: int) -> None:
    """Rows that compress to about 21 bytes each (700,000 rows: two 8 MiB parts)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO testapp_secret (value) "
            "SELECT md5(i::text || random()::text) FROM generate_series(1, %s) AS i",
            [rows],
        )


def multipart_uploads(endpoint: str, location: str) -> list[dict]:
    bucket = location.removeprefix("s3://").split("/")[0]
    return s3_client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_s3_unreachable_mid_dump(moto_server, s3_location, settings):
    fill_secrets(700_000)
    settings.PGCLONE_S3_MAX_ATTEMPTS = 2
    parts = []

    def outage(method, path):
        if method == "PUT" and "partNumber=" in path:
            parts.append(path)
            if len(parts) == 2:  # the first part is in S3; then the network goes
                proxy.go_down()
        return None

    with FaultProxy(moto_server, outage) as proxy:
        settings.PGCLONE_S3_ENDPOINT_URL = proxy.url
        job = api.dump(inline=True)
        # Still unreachable: the sweep's discarding fails quietly and keeps the handle.
        assert dump_steps.discard_leftover_uploads() == 0

    assert job.status == Job.Status.FAILED
    assert job.error.startswith("S3 storage failed while uploading"), job.error
    assert "S3 could not be reached" in job.error
    assert "EndpointConnectionError(" not in job.error
    assert "The partial dump could not be discarded yet" in job.error
    assert "The next sweep" in job.error and "cleanup also failed" not in job.error
    job.refresh_from_db()
    assert job.result["staged"]["upload_id"]

    settings.PGCLONE_S3_ENDPOINT_URL = moto_server  # S3 is back
    assert api.ls() == []
    assert [u["UploadId"] for u in multipart_uploads(moto_server, s3_location)] == [
        job.result["staged"]["upload_id"]
    ]
    assert dump_steps.discard_leftover_uploads() == 1
    assert multipart_uploads(moto_server, s3_location) == []
    job.refresh_from_db()
    assert job.result["staged"] is None
    assert dump_steps.discard_leftover_uploads() == 0


# A full disk while the manifest is written ---------------------------------------------


def fill_up(path: Path) -> None:
    """Write to ``path`` until the file system is full."""
    with open(path, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)


def files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_disk_full_while_writing_the_manifest(tiny_disk, settings, monkeypatch):
    storage_folder = tiny_disk / "dumps"
    settings.PGCLONE_STORAGE_LOCATION = str(storage_folder)
    monkeypatch.setattr(starting, "start", lambda *args, **kwargs: None)  # the steps run below
    job = api.dump()
    assert dump_steps.WORKFLOW.run("pre_dump", job.pk)
    assert dump_steps.WORKFLOW.run("dump", job.pk)
    fill_up(tiny_disk / "filler")

    with pytest.raises(StorageError, match="No space left on device"):
        dump_steps.WORKFLOW.run("upload", job.pk)

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "Could not write the manifest" in job.error
    assert "No space left on device" in job.error and f"{job.dump_key}.json" in job.error
    assert api.ls() == []
    assert list(tiny_disk.rglob("*.tmp")) == []
    assert files(storage_folder) == []  # the cleanup removed the data moved under its key


def test_a_manifest_write_fails_whole_and_can_be_retried(tiny_disk):
    storage = LocalStorage(tiny_disk / "dumps")
    key = keys.make_key("shop", "default", timezone.now())
    upload = storage.start_upload(key, "job-1")
    upload.write(b"a dump")
    handle = upload.close()
    manifest = {"key": str(key), "size": 6, "sha256": "0" * 64}
    fill_up(tiny_disk / "filler")

    with pytest.raises(StorageError, match="No space left on device"):
        storage.complete(handle, manifest)
    assert storage.list_keys() == []
    assert list(tiny_disk.rglob("*.tmp")) == []

    (tiny_disk / "filler").unlink()  # room again: the upload step, retried, completes
    storage.complete(handle, manifest)
    assert storage.list_keys() == [key]
    assert storage.read_manifest(key) == manifest
