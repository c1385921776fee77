"""Faults and bad input, against real services: workers killed for real, S3
answering errors over HTTP, a full disk, names that need quoting, a role
without rights. For every case: the live data unchanged, nothing left behind,
the job ended with its cause."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import zstandard
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from pgclone import api
from pgclone.engine import runner
from pgclone.exceptions import ConfigurationError, DumpDamaged
from pgclone.models import Job, JobStep
from pgclone.pg import databases
from pgclone.storage import storage_for
from tests import pg
from tests.faultproxy import FaultProxy
from tests.helpers import (
    LIMITED_ROLE,
    OWNER_ROLE,
    authors,
    fingerprint,
    make_dump,
    pgclone_databases,
    psql,
    replace_dump_bytes,
    wait_for,
)
from tests.processes import own_queue, start_worker, stop_worker
from tests.testapp.models import Secret

pytestmark = pytest.mark.django_db(transaction=True)


# Workers that die ------------------------------------------------------------------


@pytest.fixture
def own_worker(request, test_database_name, moto_server, tmp_path, settings):
    """A worker of this test's own, on a queue of its own, so the test knows which
    worker runs its job. Its pool is "solo" (the task runs in the process a
    SIGKILL hits) unless the test asks for another."""
    queue = own_queue("faults")
    settings.PGCLONE_CELERY_QUEUE = queue
    pool = getattr(request, "param", "solo")
    worker = start_worker(
        test_database_name, tmp_path / "worker.log", moto=moto_server, queue=queue, pool=pool
    )
    yield worker
    stop_worker(worker)  # also after a test killed it: its group and its TMPDIR


def process_listing() -> str:
    return subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout


def pg_dump_processes(job: Job) -> list[str]:
    """Running pg_dump processes of this job (its id is in their connection string)."""
    listing = process_listing()
    return [line for line in listing.splitlines() if "pg_dump" in line and str(job.pk) in line]


def job_processes(job: Job) -> list[str]:
    """Running pg_dump and psql processes of this job (its id is in their connection string)."""
    ours = [line for line in process_listing().splitlines() if str(job.pk) in line]
    return [line for line in ours if "pg_dump" in line or "psql" in line]


def waiting_for_a_lock(job: Job) -> int:
    """The job's sessions waiting for a lock (the dump's, behind ``locked_table``)."""
    return int(
        psql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            f"AND application_name = 'pgclone:{job.pk}'"
        )
    )


def job_sessions(job: Job) -> int:
    return int(
        psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgclone:{job.pk}'")
    )


def swept(job: Job) -> Job:
    """Run the sweep until the lost job is marked failed (it must be within seconds)."""

    def lost():
        api.sweep()
        job.refresh_from_db()
        return job if job.is_finished else None

    return wait_for(lost, timeout=30, what="the sweep to mark the job lost")


def test_worker_killed_during_a_dump(own_worker, local_location, locked_table):
    job = api.dump()
    wait_for(lambda: waiting_for_a_lock(job), what="the dump to wait for its lock")

    own_worker.process.send_signal(signal.SIGKILL)
    own_worker.process.wait()

    wait_for(lambda: not job_processes(job), what="its programs to die with their worker")
    job = swept(job)
    assert job_sessions(job) == 0  # the sweep ended the session that waited
    assert job.status == Job.Status.FAILED and "Worker lost" in job.error
    assert job.steps.get(name="dump").status == JobStep.Status.FAILED
    assert api.ls() == []
    assert [p for p in Path(local_location).rglob("*") if p.is_file()] == []


def test_worker_killed_during_a_restore(own_worker, local_location, target, tmp_path):
    key = make_dump("never", local_location)
    before = fingerprint(target)
    release = tmp_path / "release"
    job = api.restore(key, database="target", pre_swap_hooks=[f"testapp_wait {release}"])
    wait_for(lambda: Path(f"{release}.started").exists(), what="the hook")
    assert len(pgclone_databases()) == 1

    own_worker.process.send_signal(signal.SIGKILL)
    own_worker.process.wait()

    job = swept(job)
    assert job.status == Job.Status.FAILED and "during step pre_swap" in job.error
    assert pgclone_databases() == []
    assert fingerprint(target) == before
    # The lock is free again: another restore of the same database is accepted.
    again = api.restore(key, database="target", inline=True, pre_swap_hooks=[])
    assert again.status == Job.Status.SUCCEEDED, again.error


@pytest.mark.parametrize("own_worker", ["prefork"], indirect=True)
def test_worker_shut_down_during_a_dump(own_worker, local_location, locked_table):
    job = api.dump()
    wait_for(lambda: waiting_for_a_lock(job), what="the dump to wait for its lock")

    own_worker.process.send_signal(signal.SIGTERM)  # warm shutdown: waits for the task…
    own_worker.process.send_signal(signal.SIGQUIT)  # …cold shutdown: stops it
    own_worker.process.wait(timeout=30)

    assert not job_processes(job)  # no orphan left running
    job.refresh_from_db()
    if not job.is_finished:
        job = swept(job)
    wait_for(lambda: job_sessions(job) == 0, what="the dump's sessions to end")
    assert job.status == Job.Status.FAILED
    assert "worker was stopped" in job.error or "Worker lost" in job.error
    assert api.ls() == []
    assert [p for p in Path(local_location).rglob("*") if p.is_file()] == []


def test_a_redelivered_step_does_not_run_twice(local_location, target):
    key = make_dump("once", local_location)
    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])
    assert job.status == Job.Status.SUCCEEDED
    before = fingerprint(target)
    calls = []

    # A second delivery of a finished job's step stops its chain and does nothing.
    assert not runner.run_step(job.pk, "swap", lambda j: calls.append(j))
    # A step that another worker is running (heartbeat fresh) is left to it.
    dump = api.dump(inline=True)
    Job.objects.filter(pk=dump.pk).update(status="running", heartbeat_at=timezone.now())
    JobStep.objects.filter(job=dump, name="upload").update(status="running")
    assert not runner.run_step(dump.pk, "upload", lambda j: calls.append(j))
    assert calls == []
    assert fingerprint(target) == before


class WorkerDied(BaseException):
    """Stands for the worker's death at one exact point, which a real signal
    cannot hit reliably."""


def as_left_by_a_dead_worker(job: Job, step: str) -> None:
    """What a worker killed inside ``step`` leaves: the step and job running,
    their heartbeat old enough for another delivery to take the step over."""
    stale = timezone.now() - dt.timedelta(hours=1)
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, error="", finished_at=None, heartbeat_at=stale
    )
    JobStep.objects.filter(job=job, name=step).update(
        status=JobStep.Status.RUNNING, finished_at=None
    )


def test_a_swap_redelivered_after_its_worker_died_past_the_renames(
    local_location, target, monkeypatch
):
    from pgclone.steps import restore as restore_steps
    from pgclone.steps import restore_swap

    key = make_dump("swapped", local_location)

    class Dying:
        def close_all(self):
            raise WorkerDied()

    # The renames commit, then the worker dies before it records anything.
    monkeypatch.setattr(restore_swap, "connections", Dying())
    with pytest.raises(WorkerDied):
        api.restore(key, database="target", inline=True, pre_swap_hooks=[])
    monkeypatch.undo()
    job = Job.objects.latest("created_at")
    assert databases.old_name(job.pk) in pgclone_databases()
    as_left_by_a_dead_worker(job, "swap")

    # Redis hands the step to another worker: it finishes the job.
    assert restore_steps.WORKFLOW.run("swap", job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert "the swap had already happened" in job.steps.get(name="swap").message
    assert authors(target) == ["swapped"]
    assert pgclone_databases() == []  # the replaced database is dropped


def test_the_sweep_drops_a_replaced_database_left_after_success(local_location, target):
    key = make_dump("new", local_location)
    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])
    assert job.status == Job.Status.SUCCEEDED, job.error
    # The worker died between reporting success and dropping the old database.
    leftover = databases.old_name(job.pk)
    psql(f'CREATE DATABASE "{leftover}"')
    api.sweep()
    assert leftover not in pgclone_databases()
    assert authors(target) == ["new"]


# S3 and disk faults ---------------------------------------------------------------


def test_s3_errors_are_retried(moto_server, s3_location, settings):
    failures = {"count": 0}

    def flaky(method, path):
        if method == "PUT" and "partNumber=" in path and failures["count"] < 2:
            failures["count"] += 1
            return 503, "SlowDown"
        return None

    with FaultProxy(moto_server, flaky) as proxy:
        settings.PGCLONE_S3_ENDPOINT_URL = proxy.url
        job = api.dump(inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert proxy.failed == 2
    settings.PGCLONE_S3_ENDPOINT_URL = moto_server
    assert [str(key) for key in api.ls()] == [job.dump_key]


def test_s3_failing_for_good_fails_the_job_clearly(moto_server, s3_location, settings):
    def broken(method, path):
        return (500, "InternalError") if "partNumber=" in path else None

    settings.PGCLONE_S3_MAX_ATTEMPTS = 2
    with FaultProxy(moto_server, broken) as proxy:
        settings.PGCLONE_S3_ENDPOINT_URL = proxy.url
        job = api.dump(inline=True)

    assert job.status == Job.Status.FAILED
    assert "S3 storage failed while uploading" in job.error and "InternalError" in job.error
    settings.PGCLONE_S3_ENDPOINT_URL = moto_server
    assert api.ls() == []
    bucket = s3_location.removeprefix("s3://").split("/")[0]
    client = storage_for(s3_location).client
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_disk_full_while_dumping(tiny_disk, settings):
    Secret.objects.bulk_create(Secret(value=os.urandom(40).hex()) for _ in range(3000))
    settings.PGCLONE_STORAGE_LOCATION = str(tiny_disk)

    job = api.dump(inline=True)

    assert job.status == Job.Status.FAILED
    assert "No space left on device" in job.error
    assert api.ls() == []
    assert [p for p in tiny_disk.rglob("*") if p.is_file()] == []


# Bad input ----------------------------------------------------------------------------


@pytest.fixture
def odd_database(settings):
    name = settings.DATABASES["odd"]["NAME"]
    quoted = '"' + name.replace('"', '""') + '"'
    psql(f"CREATE DATABASE {quoted}")
    psql("CREATE TABLE testapp_author (id int PRIMARY KEY, name text)", name)
    psql("INSERT INTO testapp_author VALUES (1, 'odd one')", name)
    yield name
    psql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    for which in ("previous", "current"):
        copy = databases.copy_name(name, which)
        psql('DROP DATABASE IF EXISTS "' + copy.replace('"', '""') + '" WITH (FORCE)')


def test_database_names_that_need_quoting(odd_database, local_location, pgclone_cli):
    dump = api.dump(database="odd", inline=True)
    assert dump.status == Job.Status.SUCCEEDED, dump.error
    assert dump.dump_key.startswith(f"{odd_database}/")
    listed = pgclone_cli("ls", odd_database, location=local_location)
    assert listed.stdout.strip() == dump.dump_key

    psql("UPDATE testapp_author SET name = 'changed'", odd_database)
    restored = api.restore(
        odd_database, database="odd", inline=True, pre_swap_hooks=[], reversible=True
    )

    assert restored.status == Job.Status.SUCCEEDED, restored.error
    assert authors(odd_database) == ["odd one"]
    assert pgclone_databases() == []


def test_a_dump_from_a_newer_pg_dump_fails_with_pg_restores_words(local_location, target):
    key = make_dump("never", local_location)
    path = Path(local_location) / key
    raw = bytearray(zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes()))
    at = raw.index(b"PGDMP")  # the container's first pg_dump archive: its pre-data
    raw[at + 5 : at + 8] = bytes([9, 99, 0])  # archive format 9.99: from a far newer pg_dump
    data = zstandard.ZstdCompressor(write_checksum=True).compress(bytes(raw))
    replace_dump_bytes(local_location, key, data)
    before = fingerprint(target)

    job = api.restore(key, database="target", inline=True)

    assert job.status == Job.Status.FAILED
    assert "pg_restore exited with code 1" in job.error and "unsupported version" in job.error
    assert fingerprint(target) == before and pgclone_databases() == []


@pytest.fixture
def limited_role():
    psql(f"DROP ROLE IF EXISTS {LIMITED_ROLE}")
    psql(f"CREATE ROLE {LIMITED_ROLE} LOGIN NOCREATEDB")
    yield
    psql(f"DROP ROLE {LIMITED_ROLE}")


def test_a_role_without_createdb(local_location, limited_role, target, monkeypatch):
    key = make_dump("never", local_location)
    # The restore target, an existing database, seen by a role that may not create one.
    monkeypatch.setitem(settings.DATABASES["limited"], "NAME", target)
    before = fingerprint(target)

    job = api.restore(key, database="limited", inline=True)

    assert job.status == Job.Status.FAILED
    assert "permission denied to create database" in job.error
    assert fingerprint(target) == before and pgclone_databases() == []


@pytest.fixture
def owner_role(target):
    psql(f"DROP ROLE IF EXISTS {OWNER_ROLE}")
    psql(f"CREATE ROLE {OWNER_ROLE} LOGIN CREATEDB")
    psql(f'ALTER DATABASE "{target}" OWNER TO {OWNER_ROLE}')
    yield OWNER_ROLE
    psql(f'ALTER DATABASE "{target}" OWNER TO postgres')
    psql(f"DROP OWNED BY {OWNER_ROLE} CASCADE")
    psql(f"DROP ROLE {OWNER_ROLE}")


def test_a_role_that_cannot_end_other_sessions(local_location, target, owner_role):
    key = make_dump("never", local_location)
    before = fingerprint(target)
    superuser_session = pg.connect(target)
    try:
        job = api.restore(key, database="owner", inline=True, pre_swap_hooks=[])
    finally:
        superuser_session.close()

    assert job.status == Job.Status.FAILED
    assert job.steps.get(name="swap").status == JobStep.Status.FAILED
    assert "end the other sessions" in job.error and "pg_signal_backend" in job.error
    assert fingerprint(target) == before and pgclone_databases() == []
    # Connections were allowed again after the refused swap.
    assert psql(f"SELECT datallowconn FROM pg_database WHERE datname = '{target}'") == "t"


@pytest.mark.parametrize("location", ["s3:/bucket/dumps", "s3//bucket", "S3:bucket", "gs://x/y"])
def test_storage_location_typos(location, settings):
    settings.PGCLONE_STORAGE_LOCATION = location
    with pytest.raises(ConfigurationError, match="write s3://BUCKET/PREFIX"):
        api.dump(inline=True)
    job = Job.objects.get()
    assert job.status == Job.Status.FAILED and "s3://BUCKET/PREFIX" in job.error


# Integrity and secrets ------------------------------------------------------------------


def test_verify(local_location):
    key = make_dump("checked", local_location)
    out = io.StringIO()
    call_command("pgclone", "verify", key, stdout=out)
    assert f"{key} is sound" in out.getvalue() and "archive entries" in out.getvalue()

    path = Path(local_location) / key
    data = path.read_bytes()
    path.write_bytes(data[:100] + bytes(b ^ 1 for b in data[100:150]) + data[150:])
    with pytest.raises(DumpDamaged, match="damaged"):
        api.verify(key)


def test_secrets_stay_out_of_argv_logs_and_jobs(
    celery_worker, local_location, locked_table, settings
):
    password = settings.DATABASES["secret"]["PASSWORD"]
    # testapp_secret, locked by another session, is left out: the dump's own
    # session locks no more than the tables it copies, its pg_dumps (which lock
    # every table they describe) wait for that one.
    job = api.dump(database="secret", exclude_models=["testapp.Secret"])
    wait_for(lambda: pg_dump_processes(job), what="pg_dump to start")

    listing = process_listing()
    assert "pg_dump" in listing and password not in listing

    api.cancel(job.pk)
    wait_for(lambda: not job_processes(job), what="pg_dump to stop")
    job.refresh_from_db()
    record = json.dumps([job.options, job.result, job.error, [s.message for s in job.steps.all()]])
    assert password not in record
    assert password not in celery_worker.output()


def test_checks_name_the_celery_settings_long_jobs_need():
    from celery import current_app

    from pgclone.checks import check_celery

    assert check_celery() == []
    saved = current_app.conf.worker_prefetch_multiplier, current_app.conf.task_time_limit
    try:
        current_app.conf.worker_prefetch_multiplier = 4
        current_app.conf.task_time_limit = None
        assert {message.id for message in check_celery()} == {"pgclone.W010", "pgclone.W011"}
        current_app.conf.task_time_limit = 8 * 3600
        assert "pgclone.W012" in {message.id for message in check_celery()}
    finally:
        current_app.conf.worker_prefetch_multiplier, current_app.conf.task_time_limit = saved


# The broker restarted mid-job ---------------------------------------------------------


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs a local redis-server")
def test_redis_restarted_during_a_restore(
    private_redis, private_redis_worker, pgclone_cli, local_location, target, tmp_path
):
    """The broker is a Redis of this test's own (the machine's is never restarted):
    the restore is enqueued to it by a command, then it restarts mid-job."""
    key = make_dump("after-redis", local_location)
    before = fingerprint(target)
    release = tmp_path / "release"
    hook = f"testapp_wait {release}"
    started = pgclone_cli(
        "restore", key, "--database", "target", "--pre-swap-hook", hook,
        location=local_location, env=private_redis.env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    job = Job.objects.get(pk=started.stdout.strip())
    wait_for(lambda: Path(f"{release}.started").exists(), what="the hook")

    private_redis.restart()  # nothing kept: the queued and unacked messages are lost
    release.touch()

    def ended():
        api.sweep()  # a step message lost with Redis leaves the job silent: swept
        job.refresh_from_db()
        return job.is_finished

    wait_for(ended, timeout=90, what="the job to end in a clear state")
    assert pgclone_databases() == []
    if job.status == Job.Status.SUCCEEDED:
        assert authors(target) == ["after-redis"]
    else:
        assert job.status == Job.Status.FAILED and job.error
        assert fingerprint(target) == before
