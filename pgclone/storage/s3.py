"""Dumps in S3 or an S3-compatible store, through boto3.

Data is streamed as a multipart upload that the dump step leaves
uncompleted; S3 shows nothing under the key until the finalising step
completes it, so a dump that died half-way is never visible. Each part is
uploaded by a background thread while the next one fills (one more waits in
between), so memory stays at about three parts (8 MiB each, more only past
16 GB) whatever the database size.
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import boto3
import botocore.exceptions
from botocore.config import Config

from pgclone import conf
from pgclone.exceptions import ConfigurationError, DumpNotFound, StorageError
from pgclone.storage import keys
from pgclone.storage.base import MANIFEST_SUFFIX, TRIAL_SUFFIX, Storage, Upload

MIN_PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000
# Part sizes double every this many parts, so that no stream runs out of parts.
PARTS_PER_SIZE = 2_000


def _extra_args() -> dict[str, Any]:
    """PGCLONE_S3_EXTRA_ARGS, given to every write: encryption, say."""
    extra = conf.s3_extra_args()
    if not isinstance(extra, dict):
        raise ConfigurationError(
            f"PGCLONE_S3_EXTRA_ARGS is a {type(extra).__name__}, not a dict such as "
            '{"ServerSideEncryption": "AES256"}.'
        )
    return dict(extra)


def _client(endpoint_url: str | None, quick: bool = False) -> Any:
    # Checking that storage answers happens before a job is accepted: fail fast
    # there. Elsewhere 5xx answers, throttling and timeouts are retried with backoff.
    return _cached_client(endpoint_url, 2 if quick else conf.s3_max_attempts(), quick)


@functools.lru_cache(maxsize=8)
def _cached_client(endpoint_url: str | None, attempts: int, quick: bool) -> Any:
    config = Config(
        retries={"max_attempts": attempts, "mode": "standard"},
        connect_timeout=5 if quick else 10,
        read_timeout=120,
    )
    return _session().client("s3", endpoint_url=endpoint_url, config=config)


@functools.cache
def _session() -> Any:
    # One session: its clients share the service models it loaded (~12 MB each otherwise).
    return boto3.session.Session()


# Refused, cut or timed-out connections (the endpoint down, the network gone),
# once boto3's retries are spent.
_UNREACHABLE = (
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError…
    botocore.exceptions.ConnectionClosedError,
    ConnectionError,
)


def _describe(exc: Exception, bucket: str, bucket_level: bool = False) -> str:
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "no AWS credentials were found (environment, ~/.aws, or an instance role)"
    if isinstance(exc, _UNREACHABLE):
        return f"S3 could not be reached ({exc}); check PGCLONE_S3_ENDPOINT_URL and the network"
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code == "NoSuchBucket" or (code == "404" and bucket_level):
            return f"the bucket {bucket!r} does not exist"
        if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return f"access to the bucket {bucket!r} was denied ({code})"
        return f"{code}: {error.get('Message', exc)}"
    return str(exc)


def _storage_error(
    exc: Exception, bucket: str, doing: str, bucket_level: bool = False
) -> StorageError:
    detail = _describe(exc, bucket, bucket_level)
    return StorageError(f"S3 storage failed while {doing}: {detail}.")


_S3_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class S3Upload(Upload):
    def __init__(self, client: Any, bucket: str, key: str, part_size: int) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.part_size = max(part_size, MIN_PART_SIZE)
        created = client.create_multipart_upload(Bucket=bucket, Key=key, **_extra_args())
        self.upload_id = created["UploadId"]
        self.parts: list[dict[str, Any]] = []
        self._sent = 0  # parts handed to the uploading thread, numbered from 1
        self._part = bytearray()  # the part being filled; handed over whole, never copied
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._upload_parts, daemon=True)
        self._thread.start()

    def _upload_parts(self) -> None:
        while (item := self._queue.get()) is not None:
            number, body = item
            if self._error is not None:
                continue
            try:
                answer = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    PartNumber=number,
                    Body=body,
                )
                self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            except BaseException as exc:  # reported to the writing thread
                self._error = exc
            del item, body  # let the part go before waiting for the next one

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error = _storage_error(self._error, self.bucket, f"uploading {self.key}")
            raise error from self._error

    def _current_part_size(self) -> int:
        return self.part_size * 2 ** (self._sent // PARTS_PER_SIZE)

    def _send(self, body: bytearray) -> None:
        if self._sent >= MAX_PARTS:
            raise StorageError("The dump is too large for one S3 object (10,000 parts).")
        self._sent += 1
        self._queue.put((self._sent, body))

    def write(self, data: bytes) -> None:
        self._raise_if_failed()
        view = memoryview(data)
        while view:
            room = self._current_part_size() - len(self._part)
            self._part += view[:room]
            view = view[room:]
            if len(self._part) >= self._current_part_size():
                self._send(self._part)
                self._part = bytearray()

    def close(self) -> dict[str, Any]:
        if self._part or not self._sent:
            self._send(self._part)
            self._part = bytearray()
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()  # the caller aborts: its failure must not hide this one
        return self.handle

    @property
    def handle(self) -> dict[str, Any]:
        parts = sorted(self.parts, key=lambda part: part["PartNumber"])
        return {"bucket": self.bucket, "key": self.key, "upload_id": self.upload_id, "parts": parts}

    def abort(self) -> None:
        if self._thread.is_alive():
            self._error = self._error or StorageError("aborted")
            self._queue.put(None)
            self._thread.join()
        abort_upload(self.client, self.bucket, self.key, self.upload_id)


def abort_upload(client: Any, bucket: str, key: str, upload_id: str) -> None:
    doing = f"discarding the partial upload of {key}"
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except botocore.exceptions.ClientError as exc:
        if _code(exc) != "NoSuchUpload":
            raise _storage_error(exc, bucket, doing) from exc
    except _S3_ERRORS as exc:  # unreachable: the upload stays until someone aborts it
        raise _storage_error(exc, bucket, doing) from exc


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url if endpoint_url is not None else conf.s3_endpoint_url()
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    @property
    def client(self) -> Any:
        return _client(self.endpoint_url)

    def _object(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def check(self) -> None:
        with self._errors(f"checking {self.location}", bucket_level=True):
            _client(self.endpoint_url, quick=True).head_bucket(Bucket=self.bucket)

    def start_upload(self, key: keys.DumpKey, job_id: str, expected_size: int = 0) -> S3Upload:
        # Aim for ~2,000 parts at the expected size; parts grow anyway if it is exceeded.
        part_size = max(MIN_PART_SIZE, expected_size // PARTS_PER_SIZE)
        with self._errors(f"starting the upload of {key}"):
            return S3Upload(self.client, self.bucket, self._object(str(key)), part_size)

    def complete(self, handle: dict[str, Any], manifest: dict[str, Any]) -> None:
        client, bucket, key = self.client, handle["bucket"], handle["key"]
        extra = _extra_args()  # a bad setting fails before the upload is completed
        try:
            client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=handle["upload_id"],
                MultipartUpload={"Parts": handle["parts"]},
            )
        except botocore.exceptions.ClientError as exc:
            # Run twice (a redelivered task): the upload is already complete.
            if _code(exc) != "NoSuchUpload":
                raise _storage_error(exc, bucket, f"completing {key}") from exc
        except _S3_ERRORS as exc:
            raise _storage_error(exc, bucket, f"completing {key}") from exc
        try:
            size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
            if size != manifest["size"]:
                raise StorageError(
                    f"S3 holds {size} bytes at {key} but {manifest['size']} were written."
                )
            client.put_object(
                Bucket=bucket,
                Key=key + MANIFEST_SUFFIX,
                Body=_json_bytes(manifest),
                ContentType="application/json",
                **extra,
            )
        except _S3_ERRORS as exc:
            raise _storage_error(exc, bucket, f"finalising {key}") from exc

    def abort(self, handle: dict[str, Any]) -> None:
        client, bucket, key = self.client, handle["bucket"], handle["key"]
        abort_upload(client, bucket, key, handle["upload_id"])
        try:
            client.head_object(Bucket=bucket, Key=key + MANIFEST_SUFFIX)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in {"NoSuchKey", "404"}:
                raise _storage_error(exc, bucket, f"checking {key}") from exc
            # Completed but never committed: not a dump, so it goes.
            with self._errors(f"deleting the uncommitted {key}"):
                client.delete_object(Bucket=bucket, Key=key)
        except _S3_ERRORS as exc:
            raise _storage_error(exc, bucket, f"checking {key}") from exc

    def _json_names(self, database: str | None) -> list[str]:
        base = self._object("")
        prefix = self._object(f"{database}/") if database else base
        names = []
        with self._errors(f"listing {self.location}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(base) :]
                    if name.endswith(".json"):
                        names.append(name)
        return names

    @contextlib.contextmanager
    def _errors(
        self, doing: str, missing: str | None = None, bucket_level: bool = False
    ) -> Iterator[None]:
        """Turn boto3's errors into StorageError (or DumpNotFound for ``missing``)."""
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            if missing and _code(exc) in {"NoSuchKey", "404"}:
                raise DumpNotFound(missing) from exc
            raise _storage_error(exc, self.bucket, doing, bucket_level) from exc
        except _S3_ERRORS as exc:
            raise _storage_error(exc, self.bucket, doing, bucket_level) from exc

    def _read_bytes(self, name: str, limit: int) -> bytes:
        missing = f"No complete dump {name.removesuffix(MANIFEST_SUFFIX)!r}."
        with self._errors(f"reading {name}", missing):
            body = self.client.get_object(Bucket=self.bucket, Key=self._object(name))["Body"]
            with contextlib.closing(body):  # the rest of a larger one is never fetched
                return body.read(limit + 1)

    def data_size(self, key: keys.DumpKey) -> int:
        with self._errors(f"reading {key}", f"The data of dump {str(key)!r} is missing."):
            answer = self.client.head_object(Bucket=self.bucket, Key=self._object(str(key)))
            return answer["ContentLength"]

    def open(self, key: keys.DumpKey) -> BinaryIO:
        with self._errors(f"reading {key}", f"The data of dump {str(key)!r} is missing."):
            return self.client.get_object(Bucket=self.bucket, Key=self._object(str(key)))["Body"]

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        extra = _extra_args()
        with self._errors(f"writing {name}"):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._object(name),
                Body=_json_bytes(data),
                ContentType="application/json",
                **extra,
            )

    def delete(self, key: keys.DumpKey) -> None:
        name = self._object(str(key))
        with self._errors(f"deleting {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=name + MANIFEST_SUFFIX)
            self.client.delete_object(Bucket=self.bucket, Key=name)
            self.client.delete_object(Bucket=self.bucket, Key=name + TRIAL_SUFFIX)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _json_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode()
