"""Encrypted dumps end to end: real pg_dump/pg_restore, real workers holding the
identities (from a file, from the environment), moto S3, and the keys that
must never show anywhere."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest
from django.urls import reverse

from pgclone.models import Job
from tests.helpers import (
    authors,
    fingerprint,
    make_dump,
    pgclone_databases,
    replace_dump_bytes,
    s3_client,
    wait_for,
)
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
KEY_A = pyrage.x25519.Identity.generate()  # in an identity file
KEY_B = pyrage.x25519.Identity.generate()  # in PGCLONE_AGE_IDENTITY
KEY_C = pyrage.x25519.Identity.generate()  # retired: no worker has it
A, B, C = (str(key.to_public()) for key in (KEY_A, KEY_B, KEY_C))
SECRETS = [str(KEY_A), str(KEY_B), str(KEY_C)]


# Workers with identities ------------------------------------------------------------


class KeyedWorker:
    def __init__(self, worker: Any, queue: str) -> None:
        self.worker = worker
        self.queue = queue
        self.env = {"PGCLONE_TEST_QUEUE": queue}  # for a `manage.py pgclone` sending to it


@pytest.fixture(scope="module")
def identity_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("keys") / "pgclone.agekey"
    path.write_text(f"# public key: {A}\n{KEY_A}\n")
    path.chmod(0o600)
    return str(path)


def keyed_worker(tmp_path_factory, test_database_name, moto_server, env) -> Iterator[KeyedWorker]:
    queue = own_queue("enc")
    log = tmp_path_factory.mktemp("keyed-worker") / "worker.log"
    worker = start_worker(
        test_database_name, log, moto=moto_server, queue=queue,
        env={"PGCLONE_TEST_QUEUE": queue, **env},
    )  # fmt: skip
    yield KeyedWorker(worker, queue)
    stop_worker(worker)


@pytest.fixture(scope="module")
def file_worker(tmp_path_factory, test_database_name, moto_server, identity_file):
    """A worker whose identity (A's) comes from PGCLONE_ENCRYPTION_IDENTITIES."""
    env = {"PGCLONE_TEST_ENCRYPTION_IDENTITIES": json.dumps([identity_file])}
    yield from keyed_worker(tmp_path_factory, test_database_name, moto_server, env)


@pytest.fixture(scope="module")
def env_worker(tmp_path_factory, test_database_name, moto_server):
    """A worker whose identity (B's) comes from the environment variable."""
    env = {"PGCLONE_AGE_IDENTITY": str(KEY_B)}
    yield from keyed_worker(tmp_path_factory, test_database_name, moto_server, env)


# Helpers ---------------------------------------------------------------------------


def encrypted_dump(name: str, location: str, settings: Any, recipients: list[str]) -> str:
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = recipients
    key = make_dump(name, location)
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = []
    return key


def restore(pgclone_cli: Any, location: str, key: str, env: dict[str, str] | None = None):
    return pgclone_cli("restore", key, "--database", "target", "--wait", location=location, env=env)


def no_secret_in(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
        assert "AGE-SECRET-KEY" not in text


def job_records() -> str:
    return json.dumps(
        [
            [job.options, job.result, job.error, [step.message for step in job.steps.all()]]
            for job in Job.objects.all()
        ]
    )


# Tests -----------------------------------------------------------------------------


@pytest.mark.matrix
def test_an_encrypted_dump_stores_no_row_and_restores_with_an_identity_file(
    file_worker, pgclone_cli, local_location, target, settings
):
    key = encrypted_dump("sealed-row-ann", local_location, settings, [A])

    stored = (Path(local_location) / key).read_bytes()
    assert b"sealed-row-ann" not in stored and ZSTD_MAGIC not in stored
    manifest = json.loads((Path(local_location) / f"{key}.json").read_text())
    assert manifest["encryption"] == {"method": "age", "recipients": [A]}
    assert manifest["sha256"] == hashlib.sha256(stored).hexdigest()
    assert manifest["plaintext_sha256"] != manifest["sha256"]
    listed = pgclone_cli("ls", "--long", location=local_location).stdout
    assert "encrypted" in next(line for line in listed.splitlines() if key in line)

    result = restore(pgclone_cli, local_location, key, file_worker.env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"this worker holds the identity of {A}" in result.stdout
    # Loaded in parallel sessions straight from the stream: never on disk decrypted.
    assert f"Restored {key} into " in result.stdout and "COPY of the tables in " in result.stdout
    assert authors(target) == ["sealed-row-ann"]
    no_secret_in(result.stdout, result.stderr, job_records(), file_worker.worker.output())


def test_rotated_recipients_restore_from_s3_with_the_identity_in_the_environment(
    env_worker, pgclone_cli, s3_location, target, settings, moto_server
):
    key = encrypted_dump("rotated", s3_location, settings, [C, B])
    bucket = s3_location.removeprefix("s3://").split("/")[0]
    stored = s3_client(moto_server).get_object(Bucket=bucket, Key=f"dumps/{key}")["Body"].read()
    assert b"rotated" not in stored and ZSTD_MAGIC not in stored

    result = restore(pgclone_cli, s3_location, key, env_worker.env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "COPY of the tables in " in result.stdout and f"identity of {B}" in result.stdout
    assert authors(target) == ["rotated"]
    no_secret_in(result.stdout, result.stderr, job_records(), env_worker.worker.output())


def test_without_a_matching_identity_the_restore_fails_in_fetch_creating_nothing(
    celery_worker, env_worker, pgclone_cli, local_location, target, settings
):
    key = encrypted_dump("unreadable", local_location, settings, [A, C])
    before = fingerprint(target)

    for worker_env in (None, env_worker.env):  # no identity at all; B's, which is not one
        result = restore(pgclone_cli, local_location, key, worker_env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "in step fetch" in result.stderr and f"for {A}, {C}" in result.stderr
        no_secret_in(result.stdout, result.stderr)
    restores = Job.objects.filter(kind=Job.Kind.RESTORE).order_by("created_at")
    assert "no identity is configured here" in restores[0].error
    assert f"the identities here are those of {B}" in restores[1].error
    for job in restores:
        assert job.status == Job.Status.FAILED
        assert "temp_database" not in job.result  # restore_temp never ran
    assert fingerprint(target) == before and pgclone_databases() == []
    no_secret_in(job_records(), env_worker.worker.output())


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_a_changed_ciphertext_fails_before_the_swap(
    damage, file_worker, pgclone_cli, local_location, target, settings
):
    """The manifest is rewritten to match (size, SHA-256): only age notices."""
    key = encrypted_dump("damaged", local_location, settings, [A])
    path = Path(local_location) / key
    data = path.read_bytes()
    middle = len(data) // 2
    if damage == "tampered":
        data = data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :]
    else:
        data = data[:middle]
    replace_dump_bytes(local_location, key, data)
    before = fingerprint(target)

    result = restore(pgclone_cli, local_location, key, file_worker.env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "in step restore_temp" in result.stderr and "could not be decrypted" in result.stderr
    assert fingerprint(target) == before and pgclone_databases() == []


def test_verify_without_an_identity_checks_what_it_can_and_says_so(
    pgclone_cli, local_location, settings, identity_file
):
    key = encrypted_dump("verified", local_location, settings, [A])

    outside = pgclone_cli("verify", key, location=local_location)
    assert outside.returncode == 0, outside.stdout + outside.stderr
    assert "stored bytes are sound" in outside.stdout
    assert "could not be checked inside" in outside.stdout and A in outside.stdout

    env = {"PGCLONE_TEST_ENCRYPTION_IDENTITIES": json.dumps([identity_file])}
    inside = pgclone_cli("verify", key, location=local_location, env=env)
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert f"{key} is sound" in inside.stdout and "archive entries" in inside.stdout

    path = Path(local_location) / key
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    damaged = pgclone_cli("verify", key, location=local_location, env=env)
    assert damaged.returncode == 1 and "could not be decrypted" in damaged.stderr
    damaged_outside = pgclone_cli("verify", key, location=local_location)
    assert damaged_outside.returncode == 1 and "its SHA-256 is" in damaged_outside.stderr
    no_secret_in(outside.stdout, inside.stdout, damaged.stderr)


def test_keys_never_show_in_argv_while_a_restore_runs(
    env_worker, pgclone_cli, local_location, target, settings, tmp_path
):
    key = encrypted_dump("watched", local_location, settings, [B])
    release = tmp_path / "release"
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(
                subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
            )

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = pgclone_cli(
            "restore", key, "--database", "target", "--pre-swap-hook", f"testapp_wait {release}",
            location=local_location, env=env_worker.env,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        wait_for(lambda: Path(f"{release}.started").exists(), what="the hook")
        listing = "\n".join(seen)
        assert env_worker.worker.name in listing  # the worker's own argv was seen
        release.touch()
        job = Job.objects.get(pk=started.stdout.strip())
        wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, what="the restore")
    finally:
        stop.set()
        watcher.join()
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCEEDED
    no_secret_in("\n".join(seen), job_records(), env_worker.worker.output())


def test_the_dumps_page_marks_encrypted_dumps(admin_client, local_location, settings):
    sealed = encrypted_dump("sealed", local_location, settings, [A])
    plain = make_dump("plain", local_location)

    page = admin_client.get(reverse("admin:pgclone_dumps")).content.decode()

    rows = {key: page[page.index(key) :].split("</tr>")[0] for key in (sealed, plain)}
    assert f'title="age, for {A}">encrypted<' in rows[sealed]
    assert "encrypted" not in rows[plain]


def test_a_trial_restore_decrypts_and_a_missing_identity_is_no_verdict_on_the_dump(
    file_worker, celery_worker, pgclone_cli, local_location, settings
):
    key = encrypted_dump("proven-sealed", local_location, settings, [A])
    trial = Path(local_location) / f"{key}.trial.json"

    # A worker without the identity can't try it: the job fails, the dump has no verdict.
    refused = pgclone_cli("verify", key, "--restore", "--wait", location=local_location)
    assert refused.returncode == 1 and "in step fetch" in refused.stderr
    assert not trial.exists() and pgclone_databases() == []

    result = pgclone_cli(
        "verify", key, "--restore", "--wait", location=local_location, env=file_worker.env
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Trial restore succeeded" in result.stdout and "as the dump recorded" in result.stdout
    assert json.loads(trial.read_text())["outcome"] == "passed"
    assert pgclone_databases() == []
    no_secret_in(result.stdout, result.stderr, trial.read_text(), job_records())
