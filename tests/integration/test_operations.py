"""Living with pgclone: cancelling jobs, retention, scheduled dumps with celery beat."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from pgclone import api
from pgclone.exceptions import ConfigurationError
from pgclone.models import Job, JobStep
from pgclone.storage import storage_for
from tests.helpers import ROOT, copy_dump, fingerprint, make_dump, pgclone_databases, psql, wait_for
from tests.processes import worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def waiting_pg_dumps(database: str) -> int:
    return int(
        psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgclone:%' "
            f"AND datname = '{database}' AND wait_event_type = 'Lock' "
            "AND query ILIKE 'LOCK TABLE%'"
        )
    )


def test_cancel_stops_a_running_pg_dump(
    celery_worker, pgclone_cli, local_location, locked_table, test_database_name
):
    job = api.dump()
    wait_for(lambda: waiting_pg_dumps(test_database_name) == 1, what="pg_dump to block")

    result = pgclone_cli("cancel", str(job.pk)[:8], location=local_location)

    assert result.returncode == 0, result.stderr
    assert f"Cancelled dump job {job.pk}" in result.stdout
    wait_for(
        lambda: JobStep.objects.get(job=job, name="dump").status == JobStep.Status.FAILED,
        what="the dump step to stop",
    )
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and "Cancelled by" in job.error
    # pg_dump is gone, and so is its session waiting on the server.
    wait_for(lambda: waiting_pg_dumps(test_database_name) == 0, what="pg_dump's session to end")
    assert api.ls() == []
    assert [p for p in Path(local_location).rglob("*") if p.is_file()] == []  # nothing staged


def test_cancel_a_restore_in_its_hook_drops_the_temporary_database(
    celery_worker,
    pgclone_cli,
    local_location,
    target,
    tmp_path,
):
    key = make_dump("never", local_location)
    before = fingerprint(target)
    release = tmp_path / "release"
    job = api.restore(key, database="target", pre_swap_hooks=[f"testapp_wait {release}"])
    wait_for(lambda: Path(f"{release}.started").exists(), what="the hook to start")
    assert len(pgclone_databases()) == 1  # the temporary database exists

    result = pgclone_cli("cancel", str(job.pk), location=local_location)
    assert result.returncode == 0, result.stderr
    release.touch()  # the hook ends; the job must go no further

    wait_for(
        lambda: JobStep.objects.get(job=job, name="pre_swap").status == JobStep.Status.FAILED,
        what="the restore to stop",
    )
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert job.steps.get(name="swap").status == JobStep.Status.SKIPPED
    assert pgclone_databases() == []
    assert fingerprint(target) == before


def test_cancelling_a_finished_job_is_refused(pgclone_cli, local_location):
    job = api.dump(inline=True)
    result = pgclone_cli("cancel", str(job.pk), location=local_location)
    assert result.returncode == 1
    assert f"Job {job.pk} has already ended (succeeded)" in result.stderr


def test_jobs_and_show(pgclone_cli, local_location):
    job = api.dump(inline=True, pre_dump_hooks=["testapp_mark"])
    listed = pgclone_cli("jobs", location=local_location)
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["ID", "KIND", "STATUS", "DATABASE", "CREATED", "DURATION", "STEP"]
    assert row.split()[:3] == [str(job.pk)[:8], "dump", "succeeded"]

    shown = pgclone_cli("show", str(job.pk)[:6], location=local_location)
    assert shown.returncode == 0
    assert f"dump key:     {job.dump_key}" in shown.stdout
    assert "Ran testapp_mark" in shown.stdout
    for step in ("pre_dump", "dump", "upload"):
        assert f"    {step}" in shown.stdout
    assert pgclone_cli("show", "ffffffff", location=local_location).returncode == 1


# Retention ----------------------------------------------------------------------


def test_retention_runs_after_each_dump(local_location):
    made = [api.dump(config="kept", inline=True) for _ in range(3)]
    assert all(job.status == Job.Status.SUCCEEDED for job in made)
    assert [str(key) for key in api.ls()] == [made[1].dump_key, made[2].dump_key]
    assert "retention deleted 1 older dump(s)" in made[2].steps.get(name="upload").message


def test_prune_keeps_the_newest_recent_and_in_use_dumps(local_location, settings):
    settings.PGCLONE_DUMP_CONFIGS = {"default": {}, "nightly": {"keep_last": 1, "keep_days": 7}}
    base = make_dump("base", local_location)
    old = [
        copy_dump(local_location, base, "shop", f"2020010{day}T000000.000000Z", "nightly")
        for day in (1, 2, 3)
    ]
    manual = copy_dump(local_location, base, "shop", "20200101T000000.000000Z", "default")
    in_use = Job.objects.create(
        kind=Job.Kind.RESTORE, status=Job.Status.RUNNING, database_name="x", dump_key=old[0]
    )

    out = io.StringIO()
    call_command("pgclone", "prune", "--dry-run", stdout=out)
    assert out.getvalue().splitlines() == [f"Would delete {old[1]}"]
    assert len(api.ls("shop")) == 4  # a dry run deletes nothing

    in_use.delete()
    out = io.StringIO()
    call_command("pgclone", "prune", "shop", stdout=out)
    assert out.getvalue().splitlines() == [f"Deleted {old[0]}", f"Deleted {old[1]}"]
    # The newest nightly is kept, and configs without rules are never pruned.
    assert [str(key) for key in api.ls("shop")] == [manual, old[2]]
    assert not (Path(local_location) / f"{old[0]}.json").exists()


def test_young_dumps_are_kept(local_location, settings):
    settings.PGCLONE_DUMP_CONFIGS = {"default": {"keep_days": 1}}
    jobs = [api.dump(inline=True) for _ in range(2)]
    assert api.prune(dry_run=True).deleted == []
    assert len(api.ls()) == len(jobs)


def test_bad_retention_settings_are_refused(local_location, settings):
    settings.PGCLONE_DUMP_CONFIGS = {"default": {"keep_last": 0}}
    with pytest.raises(ConfigurationError, match="keep_last'\\] must be a whole number"):
        api.dump(inline=True)


# celery beat ----------------------------------------------------------------------


def run_beat(database: str, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen:
    log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.celery_app", "beat", "--loglevel", "INFO",
         "--schedule", str(tmp_path / "beat-schedule"), *args],
        cwd=ROOT, env=worker_env(database, **env), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=20)


def drain(worker) -> None:
    """Beat stopped, what it enqueued is dropped and the worker finishes what it
    took: a scheduled dump still running when the test ends holds locks that the
    test's flush of the database waits for, while the dump waits for that flush
    to record its progress."""
    from celery import Celery

    from tests.celery_app import app

    control = Celery(broker=app.conf.broker_url, set_as_current=False)
    try:
        with control.connection_for_write() as connection:
            connection.default_channel.queue_purge(os.environ["PGCLONE_TEST_QUEUE"])

        def idle() -> bool:
            inspect = control.control.inspect(destination=[worker.name], timeout=1)
            busy = [*((inspect.active() or {}).get(worker.name) or [])]
            busy += (inspect.reserved() or {}).get(worker.name) or []
            return not busy and not Job.objects.filter(status__in=Job.ACTIVE).exists()

        wait_for(idle, timeout=120, what="the worker to end the scheduled dumps it took")
    finally:
        control.close()


def scheduled_dumps_succeed(worker) -> list[Job]:
    done = Job.objects.filter(
        kind=Job.Kind.DUMP, requested_by="celery beat", status=Job.Status.SUCCEEDED
    )
    return list(done) if done.count() >= 2 else []


def test_beat_schedule_in_settings_enqueues_dump_jobs(celery_worker, test_database_name, tmp_path):
    beat = run_beat(test_database_name, tmp_path, PGCLONE_TEST_BEAT_SCHEDULE="1")
    try:
        jobs = wait_for(lambda: scheduled_dumps_succeed(celery_worker), timeout=60, what="dumps")
    finally:
        stop(beat)
        drain(celery_worker)
    assert {job.config_name for job in jobs} == {"kept"}
    storage = storage_for(celery_worker.storage)
    assert {job.dump_key for job in jobs} & {str(k) for k in storage.list_keys()}
    for key in storage.list_keys():
        storage.delete(key)


def test_django_celery_beat_periodic_task_enqueues_dump_jobs(
    celery_worker, test_database_name, tmp_path
):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="pgclone nightly dump",
        task="pgclone.scheduled_dump",
        interval=every_second,
        kwargs='{"config": "kept"}',
    )
    beat = run_beat(
        test_database_name,
        tmp_path,
        "--scheduler",
        "django_celery_beat.schedulers:DatabaseScheduler",
    )
    try:
        jobs = wait_for(lambda: scheduled_dumps_succeed(celery_worker), timeout=60, what="dumps")
    finally:
        stop(beat)
        drain(celery_worker)
    assert all(job.config_name == "kept" for job in jobs)
    storage = storage_for(celery_worker.storage)
    for key in storage.list_keys():
        storage.delete(key)
