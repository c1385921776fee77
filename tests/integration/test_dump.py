"""The dump chain end to end: the command, a real worker on Redis, real pg_dump."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import zstandard

from pgclone import api
from pgclone.models import Job, JobStep
from pgclone.pg import postgres
from pgclone.storage import keys, storage_for
from tests.helpers import (
    LIMITED_ROLE,
    free_port,
    psql,
    restore_into,
    s3_client,
    scratch_database,
    wait_for,
)
from tests.processes import run_pgclone
from tests.testapp.models import Author, Book, Mark, Secret, Tag

pytestmark = pytest.mark.django_db(transaction=True)

SUCCESS = re.compile(r"^Dump succeeded in \S+: (?P<key>\S+\.dump) \(", re.MULTILINE)


@pytest.fixture
def sample_data():
    ann, bob = Author.objects.create(name="Ann"), Author.objects.create(name="Bob")
    tag = Tag.objects.create(name="classic")
    for author in (ann, bob):
        book = Book.objects.create(author=author, title=f"Book by {author.name}")
        book.tags.add(tag)
    Secret.objects.create(value="s3cret")


def dumped_key(result: subprocess.CompletedProcess) -> str:
    match = SUCCESS.search(result.stdout)
    assert match, f"no success line in:\n{result.stdout}\n{result.stderr}"
    return match["key"]


def read_dump(location: str, key: str) -> bytes:
    with storage_for(location).open(keys.parse_key(key)) as stream:
        return stream.read()


def counts(database: str) -> dict[str, int]:
    tables = ["testapp_author", "testapp_book", "testapp_book_tags", "testapp_secret"]
    tables += ["testapp_mark", "pgclone_job", "pgclone_jobstep"]
    query = ", ".join(f"(SELECT count(*) FROM {table})" for table in tables)
    return dict(zip(tables, map(int, psql(f"SELECT {query}", database).split("|")), strict=True))


@pytest.mark.matrix
def test_dump_wait_through_a_worker(celery_worker, pgclone_cli, local_location, sample_data):
    result = pgclone_cli("dump", "--wait", location=local_location)

    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("pre_dump", "dump", "upload"):
        assert f"{step}: started" in result.stdout and f"{step}: done in" in result.stdout
    key = dumped_key(result)
    database = Job.objects.get().database_name
    assert re.fullmatch(rf"{database}/\d{{8}}T\d{{6}}\.\d{{6}}Z\.default\.dump", key)

    listed = pgclone_cli("ls", location=local_location)
    assert listed.returncode == 0 and listed.stdout.split() == [key]
    assert pgclone_cli("ls", "--only-db-names", location=local_location).stdout.split() == [
        database
    ]

    job = Job.objects.get()
    assert job.status == Job.Status.SUCCEEDED and job.dump_key == key
    assert job.worker_hostname == celery_worker.name
    assert job.started_at and job.finished_at and job.heartbeat_at
    assert [(s.name, s.status) for s in job.steps.all()] == [
        ("pre_dump", "succeeded"),
        ("dump", "succeeded"),
        ("upload", "succeeded"),
    ]
    assert all(s.started_at <= s.finished_at for s in job.steps.all())

    data = read_dump(local_location, key)
    manifest = storage_for(local_location).read_manifest(keys.parse_key(key))
    assert manifest["size"] == len(data) and manifest["compression"] == "zstd"
    assert manifest["format"] == "pgclone-container-3"
    assert not manifest["scrubbed"] and not manifest["subset"] and "plan" not in manifest
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        plan = json.load(tar.extractfile("plan.json"))
        members = tar.getnames()
    copied = {(table["schema"], table["name"]): table["member"] for table in plan["tables"]}
    assert copied.keys() >= {("public", "testapp_book"), ("public", "testapp_author")}
    assert f"{copied['public', 'testapp_book']}/end" in members
    assert ("public", "pgclone_job") not in copied  # job history is never carried

    with scratch_database() as restored:
        restore_into(data, restored)
        assert counts(restored) == {
            "testapp_author": 2,
            "testapp_book": 2,
            "testapp_book_tags": 2,
            "testapp_secret": 1,
            "testapp_mark": 0,
            "pgclone_job": 0,  # job history is never carried by a dump
            "pgclone_jobstep": 0,
        }


def test_dump_without_wait_prints_the_job_id_at_once(celery_worker, pgclone_cli, local_location):
    result = pgclone_cli("dump", location=local_location)

    assert result.returncode == 0, result.stderr
    job_id = uuid.UUID(result.stdout.strip())
    assert f"manage.py pgclone tail {job_id}" in result.stderr
    job = wait_for(
        lambda: Job.objects.filter(pk=job_id, status__in=Job.FINISHED).first(),
        what="the dump job to finish",
    )
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert pgclone_cli("ls", location=local_location).stdout.split() == [job.dump_key]

    tailed = pgclone_cli("tail", str(job_id)[:8], location=local_location)
    assert tailed.returncode == 0 and job.dump_key in tailed.stdout
    shown = pgclone_cli("show", str(job_id), location=local_location)
    assert "succeeded" in shown.stdout and "upload" in shown.stdout


def test_inline_needs_no_broker(pgclone_cli, local_location, sample_data):
    result = pgclone_cli(
        "dump",
        "--inline",
        "--exclude-model",
        "testapp.Author",
        location=local_location,
        env={"PGCLONE_TEST_BROKER": "redis://127.0.0.1:9/0"},  # nothing listens there
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "testapp.Book" in result.stdout  # says which dependants were left out too
    with scratch_database() as restored:
        restore_into(read_dump(local_location, dumped_key(result)), restored)
        rows = counts(restored)
    assert rows["testapp_author"] == rows["testapp_book"] == rows["testapp_book_tags"] == 0
    assert rows["testapp_secret"] == 1


def test_config_and_pre_dump_hook_run_through_the_worker(
    celery_worker, pgclone_cli, local_location, sample_data
):
    result = pgclone_cli(
        "dump",
        "--config",
        "no_secrets",
        "--pre-dump-hook",
        "testapp_mark --note before-dump",
        "--wait",
        location=local_location,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    key = dumped_key(result)
    assert key.endswith(".no_secrets.dump")
    assert Mark.objects.filter(note="before-dump").count() == 1  # ran on the live database
    with scratch_database() as restored:
        restore_into(read_dump(local_location, key), restored)
        rows = counts(restored)
    assert rows["testapp_secret"] == 0 and rows["testapp_author"] == 2
    assert rows["testapp_mark"] == 1  # the hook ran before the dump


@pytest.mark.matrix
def test_dump_to_s3_through_a_worker(
    celery_worker, pgclone_cli, s3_location, moto_server, sample_data
):
    result = pgclone_cli("dump", "--wait", location=s3_location)

    assert result.returncode == 0, result.stdout + result.stderr
    key = dumped_key(result)
    assert pgclone_cli("ls", location=s3_location).stdout.split() == [key]
    bucket = s3_location.removeprefix("s3://").split("/")[0]
    client = s3_client(moto_server)
    stored = sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert stored == [f"dumps/{key}", f"dumps/{key}.json"]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with scratch_database() as restored:
        restore_into(read_dump(s3_location, key), restored)
        assert counts(restored)["testapp_book"] == 2


# Bad input: a clear message, a non-zero exit, the job failed with the cause,
# and nothing listed.


def assert_failed_cleanly(result, location, pgclone_cli, *, code, message):
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    job = Job.objects.get()
    assert job.status == Job.Status.FAILED and message in job.error
    assert pgclone_cli("ls", location=location).stdout.strip() == ""
    return job


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "nope"], "Unknown config 'nope'"),
        (["--exclude-model", "testapp.Nope"], "Unknown model 'testapp.Nope'"),
        (["--pre-dump-hook", "no_such_hook"], "no management command 'no_such_hook'"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(pgclone_cli, local_location, args, message):
    result = pgclone_cli("dump", "--wait", *args, location=local_location)
    job = assert_failed_cleanly(result, local_location, pgclone_cli, code=2, message=message)
    assert not job.steps.exclude(status=JobStep.Status.SKIPPED).exists()


def test_failing_hook_fails_the_job_in_the_worker(celery_worker, pgclone_cli, local_location):
    result = pgclone_cli(
        "dump", "--wait", "--pre-dump-hook", "testapp_fail", location=local_location
    )

    job = assert_failed_cleanly(
        result, local_location, pgclone_cli, code=1, message="the hook refused to run"
    )
    assert "in step pre_dump" in result.stderr
    assert "about to fail" in job.error  # the hook's own output
    assert dict(job.steps.values_list("name", "status")) == {
        "pre_dump": "failed",
        "dump": "skipped",
        "upload": "skipped",
    }


def test_hook_exiting_non_zero_fails_the_job(pgclone_cli, local_location):
    result = pgclone_cli(
        "dump", "--inline", "--pre-dump-hook", "testapp_fail --exit 3", location=local_location
    )
    assert_failed_cleanly(result, local_location, pgclone_cli, code=1, message="exited with code 3")


def test_missing_bucket(pgclone_cli, moto_server):
    location = "s3://pgclone-no-such-bucket/dumps"
    result = pgclone_cli("dump", "--wait", location=location)
    assert result.returncode == 1
    assert "the bucket 'pgclone-no-such-bucket' does not exist" in result.stderr
    job = Job.objects.get()
    assert job.status == Job.Status.FAILED and "does not exist" in job.error


def test_unreachable_s3_endpoint(test_database_name):
    result = run_pgclone(
        "dump",
        "--wait",
        database=test_database_name,
        location="s3://pgclone-bucket/dumps",
        moto=f"http://127.0.0.1:{free_port()}",
    )
    assert result.returncode == 1
    assert "S3 could not be reached" in result.stderr
    assert Job.objects.get().status == Job.Status.FAILED


def test_unusable_local_folder(pgclone_cli):
    result = pgclone_cli("dump", "--wait", location="/dev/null/dumps")
    assert result.returncode == 1
    assert "Can't create the dump folder /dev/null/dumps" in result.stderr
    assert Job.objects.get().status == Job.Status.FAILED


@pytest.fixture
def limited_role():
    psql(f"DROP ROLE IF EXISTS {LIMITED_ROLE}")
    psql(f"CREATE ROLE {LIMITED_ROLE} LOGIN")
    yield LIMITED_ROLE
    psql(f"DROP ROLE {LIMITED_ROLE}")


def test_a_dump_without_rights_fails_with_the_server_s_error(
    celery_worker, pgclone_cli, local_location, limited_role
):
    result = pgclone_cli("dump", "--wait", "--database", "limited", location=local_location)

    # The dump's session locks every table it copies before pg_dump starts: the
    # server's refusal names the first it may not read.
    job = assert_failed_cleanly(
        result, local_location, pgclone_cli, code=1, message="permission denied for table"
    )
    assert job.steps.get(name="dump").status == JobStep.Status.FAILED
    assert list(Path(local_location).rglob("*")) == [Path(local_location) / job.database_name]


def test_dumping_a_database_that_is_gone(celery_worker, pgclone_cli, local_location):
    result = pgclone_cli("dump", "--wait", "--database", "gone", location=local_location)
    assert_failed_cleanly(
        result,
        local_location,
        pgclone_cli,
        code=1,
        message='database "pgclone_tests_gone" does not exist',
    )


def test_a_table_locked_by_another_session_fails_the_dump_instead_of_hanging(
    monkeypatch, local_location, test_database_name
):
    """A dump waits at most LOCK_WAIT_SECONDS for its locks: an exclusive lock
    held (a migration) fails the dump with the reason, rather than keep it, and
    maybe a session waiting for the dump, waiting without end."""
    monkeypatch.setattr(postgres, "LOCK_WAIT_SECONDS", 1)
    holder = subprocess.Popen(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", test_database_name, "-X", "-q",
         "-c", "BEGIN; LOCK TABLE testapp_secret IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PGAPPNAME": "pgclone_test_lock_holder"},
    )  # fmt: skip
    try:
        granted = (
            "SELECT count(*) FROM pg_locks WHERE granted AND mode = 'AccessExclusiveLock' "
            "AND relation = 'testapp_secret'::regclass"
        )
        wait_for(lambda: psql(granted, test_database_name) == "1", timeout=10,
                 what="the other session's lock")  # fmt: skip
        job = api.dump(inline=True)
    finally:  # its backend would sleep on, holding the lock, after psql is gone
        holder.terminate()
        holder.wait(timeout=10)
        psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE application_name = 'pgclone_test_lock_holder'", test_database_name)  # fmt: skip
        wait_for(lambda: psql(granted, test_database_name) == "0", timeout=10,
                 what="the other session's end")  # fmt: skip

    assert job.status == Job.Status.FAILED
    assert "Could not lock the tables" in job.error and "gave way" in job.error, job.error
    assert api.ls() == []
    assert not [p for p in Path(local_location).glob("**/*") if p.is_file()]
