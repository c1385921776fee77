"""The restore chain end to end, through a real worker and real pg_restore."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
from pathlib import Path

import pytest
import zstandard
from django.db import connection

from pgclone import api
from pgclone.models import Job, JobStep
from pgclone.pg import databases
from tests import pg
from tests.helpers import (
    TARGET,
    authors,
    clone_database,
    copy_dump,
    fingerprint,
    make_dump,
    pgclone_databases,
    psql,
    s3_client,
    wait_for,
)
from tests.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True)


def restore_cli(pgclone_cli, location, *args):
    return pgclone_cli("restore", *args, "--database", "target", "--wait", location=location)


@pytest.mark.matrix
def test_round_trip_by_key(celery_worker, pgclone_cli, local_location, target):
    key = make_dump("ann", local_location)

    result = restore_cli(pgclone_cli, local_location, key)

    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("fetch", "restore_temp", "pre_swap", "swap"):
        assert f"{step}: done in" in result.stdout
    assert "Ran migrate" in result.stdout  # the default pre-swap hook
    assert "Restore succeeded" in result.stdout and "ms during the swap" in result.stdout
    assert authors(target) == ["ann"]
    job = Job.objects.filter(kind=Job.Kind.RESTORE).get()
    assert job.status == Job.Status.SUCCEEDED and job.dump_key == key
    assert job.worker_hostname == celery_worker.name
    # New connections waited a moment, far below the swap's deadline, and the
    # command said how long.
    window = job.result["swap_window_ms"]
    assert 0 < window < 5000
    assert f"new connections waited {window:.0f} ms" in result.stdout
    assert pgclone_databases() == []
    # Not reversible: no local copies are kept.
    assert (
        pgclone_cli("ls", "--local", "--database", "target", location=local_location).stdout.count(
            ":previous"
        )
        == 0
    )


@pytest.mark.matrix
def test_round_trip_from_s3_by_database_name(celery_worker, pgclone_cli, s3_location, target):
    make_dump("old", s3_location)
    make_dump("new", s3_location)
    database = Job.objects.filter(kind=Job.Kind.DUMP).first().database_name

    result = restore_cli(pgclone_cli, s3_location, database)

    assert result.returncode == 0, result.stdout + result.stderr
    # From S3 as from a local folder: read once, the rows loaded by parallel sessions.
    assert "COPY of the tables in " in result.stdout and "pg_restore --jobs=" in result.stdout
    assert authors(target) == ["new"]


def test_a_database_name_picks_its_newest_dump_never_a_prefixed_one(
    celery_worker, pgclone_cli, local_location, target
):
    older = copy_dump(
        local_location, make_dump("app-old", local_location), "app", "20260101T000000.000000Z"
    )
    newer = copy_dump(
        local_location, make_dump("app-new", local_location), "app", "20260201T000000.000000Z"
    )
    other = copy_dump(
        local_location, make_dump("app2", local_location), "app2", "20260301T000000.000000Z"
    )
    assert older < newer < other

    result = restore_cli(pgclone_cli, local_location, "app")

    assert result.returncode == 0, result.stdout + result.stderr
    assert Job.objects.filter(kind=Job.Kind.RESTORE).get().dump_key == newer
    assert authors(target) == ["app-new"]


@pytest.mark.matrix
def test_reversible_previous_and_current(celery_worker, pgclone_cli, local_location, target):
    key = make_dump("restored", local_location)

    first = restore_cli(pgclone_cli, local_location, key, "--reversible")
    assert first.returncode == 0, first.stdout + first.stderr
    previous = databases.copy_name(TARGET, "previous")
    current = databases.copy_name(TARGET, "current")
    local = pgclone_cli("ls", "--local", "--database", "target", location=local_location).stdout
    assert f":previous  ({previous})" in local and f":current  ({current})" in local
    assert authors(previous) == ["target-only"] and authors(current) == ["restored"]

    psql("INSERT INTO testapp_author (name) VALUES ('written-after')", TARGET)
    again = restore_cli(pgclone_cli, local_location, ":current", "--reversible")
    assert again.returncode == 0, again.stdout + again.stderr
    assert authors(TARGET) == ["restored"]
    assert authors(previous) == ["restored", "written-after"]

    back = restore_cli(pgclone_cli, local_location, ":previous")
    assert back.returncode == 0, back.stdout + back.stderr
    assert authors(TARGET) == ["restored", "written-after"]
    # Without --reversible the copies are gone, as documented.
    assert (
        psql(f"SELECT count(*) FROM pg_database WHERE datname IN ('{previous}', '{current}')")
        == "0"
    )
    missing = restore_cli(pgclone_cli, local_location, ":previous")
    assert missing.returncode == 1 and "only a restore made with --reversible" in missing.stderr


def test_restore_any_database_on_the_server(
    celery_worker, pgclone_cli, local_location, target, test_database_name
):
    source = f"pgclone_source_{os.getpid()}"
    Author.objects.create(name="from-source")
    clone_database(test_database_name, source)
    try:
        result = restore_cli(pgclone_cli, local_location, f":{source}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert authors(TARGET) == ["from-source"]
        assert authors(source) == ["from-source"]  # the source is only read
        listed = pgclone_cli("ls", "--local", "--database", "target", location=local_location)
        assert f":{source}" in listed.stdout.split()
    finally:
        psql(f'DROP DATABASE IF EXISTS "{source}" WITH (FORCE)')


@pytest.mark.matrix
def test_pre_swap_hooks_run_on_the_copy_only(
    celery_worker, pgclone_cli, local_location, target, test_database_name
):
    key = make_dump("hooked", local_location)

    result = restore_cli(
        pgclone_cli, local_location, key, "--reversible",
        "--pre-swap-hook", "migrate", "--pre-swap-hook", "testapp_mark --note pre-swap",
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    notes = "SELECT coalesce(string_agg(note, ','), '') FROM testapp_mark"
    assert psql(notes, TARGET) == "pre-swap"
    assert psql(notes, databases.copy_name(TARGET, "previous")) == ""  # the old live database
    assert psql(notes, test_database_name) == ""  # nor the database pgclone runs from


def test_swap_while_a_client_keeps_querying(celery_worker, pgclone_cli, local_location, target):
    key = make_dump("swapped", local_location)
    seen, errors, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                conn = pg.connect(TARGET)
                try:
                    with conn.cursor() as cursor:
                        cursor.execute("SELECT string_agg(name, ',') FROM testapp_author")
                        seen.append((time.monotonic(), cursor.fetchone()[0]))
                finally:
                    conn.close()
            except pg.Error as exc:
                errors.append(str(exc).strip())

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_for(lambda: len(seen) > 5, what="the client's first queries")
        result = restore_cli(pgclone_cli, local_location, key)
        wait_for(lambda: seen[-1][1] == "swapped", what="the client to see the new data")
    finally:
        stop.set()
        thread.join()

    assert result.returncode == 0, result.stdout + result.stderr
    assert {value for _, value in seen} == {"target-only", "swapped"}
    # Refused or ended sessions during the window, or a connection that was
    # starting exactly as the rename committed; never a database that is gone.
    allowed = (
        "is not currently accepting connections",
        "terminating connection",
        "server closed",
        "It seems to have just been dropped or renamed",
    )
    assert all(any(text in error for text in allowed) for error in errors), errors
    values = [value for _, value in seen]
    first_new = values.index("swapped")
    assert set(values[first_new:]) == {"swapped"}  # never back to the old data
    gap = max(b - a for (a, _), (b, _) in itertools.pairwise(seen))
    print(f"longest gap between the client's answers: {gap * 1000:.0f} ms")


@pytest.mark.matrix
def test_job_history_survives_restoring_its_own_database(
    celery_worker, pgclone_cli, local_location
):
    key = make_dump("self", local_location)
    dump_job = Job.objects.get()

    result = pgclone_cli("restore", key, "--wait", location=local_location)
    connection.close()  # the swap ended this connection

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Restore succeeded" in result.stdout  # the tail followed through the swap
    jobs = {job.kind: job for job in Job.objects.all()}
    assert jobs["dump"].pk == dump_job.pk and jobs["dump"].status == Job.Status.SUCCEEDED
    assert jobs["restore"].status == Job.Status.SUCCEEDED
    assert [s.status for s in jobs["restore"].steps.all()] == ["succeeded"] * 4
    assert list(Author.objects.values_list("name", flat=True)) == ["self"]
    # New jobs still get fresh step ids after the copy of the history.
    assert api.dump(inline=True).status == Job.Status.SUCCEEDED


# Bad input and faults: the live database unchanged, no temporary database
# left, the job failed with the cause.


@pytest.fixture
def unchanged_target(target):
    before = fingerprint(target)
    yield target
    assert fingerprint(target) == before
    assert pgclone_databases() == []


def only_restore_job() -> Job:
    return Job.objects.filter(kind=Job.Kind.RESTORE).get()


def assert_refused(result, *, code, message):
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    job = only_restore_job()
    assert job.status == Job.Status.FAILED and message in job.error
    return job


def test_malformed_key(pgclone_cli, local_location, unchanged_target):
    result = restore_cli(pgclone_cli, local_location, "app/../../etc/passwd")
    assert_refused(result, code=2, message="is not a dump key")


def test_key_of_a_missing_dump(pgclone_cli, local_location, unchanged_target):
    result = restore_cli(pgclone_cli, local_location, "app/20260101T000000.000000Z.default.dump")
    assert_refused(
        result, code=1, message="No complete dump 'app/20260101T000000.000000Z.default.dump'"
    )


def test_database_without_dumps(pgclone_cli, local_location, unchanged_target):
    result = restore_cli(pgclone_cli, local_location, "nothing_here")
    assert_refused(result, code=1, message="No complete dump of database 'nothing_here'")


def damage(location: str, key: str, change) -> None:
    path = Path(location) / key
    path.write_bytes(change(path.read_bytes()))


def test_truncated_dump(celery_worker, pgclone_cli, local_location, unchanged_target):
    key = make_dump("never", local_location)
    damage(local_location, key, lambda data: data[: len(data) // 2])

    result = restore_cli(pgclone_cli, local_location, key)
    job = assert_refused(result, code=1, message="is incomplete or damaged")
    assert job.steps.get(name="fetch").status == JobStep.Status.FAILED


def flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


def test_corrupt_bytes_in_local_storage_are_caught_before_the_swap(
    celery_worker, pgclone_cli, local_location, unchanged_target
):
    key = make_dump("never", local_location)
    damage(local_location, key, flip_middle)

    result = restore_cli(pgclone_cli, local_location, key)
    # Read once, from a local folder as from S3: checked as it streams (its
    # SQL only once checked), the temporary database dropped when it fails.
    job = assert_refused(result, code=1, message="The dump is damaged")
    assert job.steps.get(name="fetch").status == JobStep.Status.SUCCEEDED
    restore_temp = job.steps.get(name="restore_temp")
    assert restore_temp.status == JobStep.Status.FAILED
    assert "The dump is damaged" in restore_temp.message
    assert job.steps.get(name="swap").status == JobStep.Status.SKIPPED
    assert pgclone_databases() == []


def damage_in_s3(moto_server: str, location: str, key: str, change) -> None:
    """Change a dump stored in S3, and its manifest's size to match."""
    bucket, prefix = location.removeprefix("s3://").split("/", 1)
    client = s3_client(moto_server)
    name = f"{prefix}/{key}"
    data = change(client.get_object(Bucket=bucket, Key=name)["Body"].read())
    client.put_object(Bucket=bucket, Key=name, Body=data)
    manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{name}.json")["Body"].read())
    client.put_object(
        Bucket=bucket, Key=f"{name}.json", Body=json.dumps({**manifest, "size": len(data)})
    )


STREAM_DAMAGE = pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data[: len(data) // 2], "The dump is truncated"),
        (flip_middle, "The dump is damaged"),
    ],
    ids=["truncated", "corrupt"],
)


@STREAM_DAMAGE
def test_damage_found_while_streaming_from_s3(
    celery_worker, pgclone_cli, s3_location, moto_server, unchanged_target, change, message
):
    """The manifest's size matches, so only the stream itself can tell."""
    key = make_dump("never", s3_location)
    damage_in_s3(moto_server, s3_location, key, change)

    result = restore_cli(pgclone_cli, s3_location, key)
    job = assert_refused(result, code=1, message=message)
    assert job.steps.get(name="restore_temp").status == JobStep.Status.FAILED


def test_pg_restore_error_fails_with_its_message(
    celery_worker, pgclone_cli, local_location, unchanged_target
):
    key = make_dump("never", local_location)
    raw = b"not an archive" * 1000
    garbage = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    path = Path(local_location) / key
    path.write_bytes(garbage)
    manifest_path = Path(f"{path}.json")
    manifest = json.loads(manifest_path.read_text())
    manifest.update(
        size=len(garbage),
        sha256=hashlib.sha256(garbage).hexdigest(),
        raw_size=len(raw),
        format="postgresql-custom",  # as a plain dump made before the container says
    )
    manifest_path.write_text(json.dumps(manifest))

    result = restore_cli(pgclone_cli, local_location, key)
    assert_refused(result, code=1, message="pg_restore exited with code 1")
    assert "does not appear to be a valid archive" in result.stderr


def test_failing_hook(celery_worker, pgclone_cli, local_location, unchanged_target):
    key = make_dump("never", local_location)
    result = restore_cli(pgclone_cli, local_location, key, "--pre-swap-hook", "testapp_fail")
    job = assert_refused(result, code=1, message="the hook refused to run")
    assert job.steps.get(name="pre_swap").status == JobStep.Status.FAILED
    assert job.steps.get(name="swap").status == JobStep.Status.SKIPPED


def test_second_concurrent_restore_is_refused(
    celery_worker, pgclone_cli, local_location, target, tmp_path
):
    key = make_dump("first", local_location)
    release = tmp_path / "release"
    first = api.restore(key, database="target", pre_swap_hooks=[f"testapp_wait {release}"])
    wait_for(lambda: Path(f"{release}.started").exists(), what="the first restore's hook")
    before = fingerprint(target)

    second = restore_cli(pgclone_cli, local_location, key)

    assert second.returncode == 1
    assert f"A restore of database '{TARGET}' is already under way (job {first.pk}" in second.stderr
    refused = Job.objects.filter(kind=Job.Kind.RESTORE).exclude(pk=first.pk).get()
    assert refused.status == Job.Status.FAILED and "already under way" in refused.error
    assert fingerprint(target) == before
    release.touch()
    done = wait_for(
        lambda: Job.objects.filter(pk=first.pk, status__in=Job.FINISHED).first(),
        what="the first restore",
    )
    assert done.status == Job.Status.SUCCEEDED, done.error
    assert authors(target) == ["first"]


def test_restores_disabled(pgclone_cli, local_location, unchanged_target):
    result = pgclone_cli(
        "restore", "anything", "--database", "target", location=local_location,
        env={"PGCLONE_TEST_ALLOW_RESTORE": "0"},
    )  # fmt: skip
    assert_refused(result, code=1, message="Restores are disabled here")


def test_restores_disabled_in_the_worker_too(local_location, unchanged_target, settings):
    key = make_dump("never", local_location)

    def disable(job):
        settings.PGCLONE_ALLOW_RESTORE = False  # as if the worker's settings said so

    job = api.restore(key, database="target", inline=True, on_start=disable)

    assert job.status == Job.Status.FAILED and "Restores are disabled" in job.error
    assert job.steps.get(name="fetch").status == JobStep.Status.FAILED


def test_previous_when_none_exists(celery_worker, pgclone_cli, local_location, unchanged_target):
    result = restore_cli(pgclone_cli, local_location, ":previous")
    assert_refused(result, code=1, message="No :previous copy")


def test_restoring_the_live_database_onto_itself_is_refused(
    pgclone_cli, local_location, unchanged_target
):
    result = restore_cli(pgclone_cli, local_location, f":{TARGET}")
    assert_refused(result, code=2, message="is the database being restored")


def test_what_belongs_to_the_database_object_is_kept(
    celery_worker, pgclone_cli, local_location, target
):
    """Per-database settings (a search_path list too), grants and the ICU locale."""
    key = make_dump("kept", local_location)
    psql(f'DROP DATABASE "{TARGET}" WITH (FORCE)')
    psql(f"CREATE DATABASE \"{TARGET}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    psql(f'ALTER DATABASE "{TARGET}" SET search_path TO "$user", public, "Odd Schema"')
    psql(f"ALTER DATABASE \"{TARGET}\" SET statement_timeout = '5min'")
    psql(f'REVOKE CONNECT ON DATABASE "{TARGET}" FROM PUBLIC')

    result = restore_cli(pgclone_cli, local_location, key)

    assert result.returncode == 0, result.stdout + result.stderr
    assert authors(TARGET) == ["kept"]
    settings_row = psql(
        "SELECT array_to_string(setconfig, ';') FROM pg_db_role_setting s "
        f"JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{TARGET}'"
    )
    assert settings_row == 'search_path="$user", public, "Odd Schema";statement_timeout=5min'
    locale = (
        f"SELECT datlocprovider::text || daticulocale FROM pg_database WHERE datname = '{TARGET}'"
    )
    assert psql(locale) == "ien-US"
    assert psql(f"SELECT has_database_privilege('public', '{TARGET}', 'CONNECT')") == "f"
