"""Lost or only waiting: the sweep fails jobs whose worker is gone, not jobs
whose next step waits in the queue, and removes everything a lost job left."""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

import pytest
from django.utils import timezone

from pgclone import api, sweeping
from pgclone.models import Job, JobStep
from pgclone.steps import dump as dump_steps
from tests import faults, pg
from tests.helpers import clone_database, fingerprint, make_dump, pgclone_databases, psql, wait_for
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def unconsumed_queue(settings):
    """A queue no worker reads: jobs sent there wait, as behind a busy worker."""
    from tests.celery_app import app

    queue = own_queue("nobody")
    settings.PGCLONE_CELERY_QUEUE = queue
    yield queue
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)


def test_a_job_between_steps_is_waiting_not_lost(local_location, unconsumed_queue):
    job = api.dump()
    assert dump_steps.WORKFLOW.run("pre_dump", job.pk)  # a worker ran the first step…
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING  # …and the next one waits in the queue

    an_hour_later = timezone.now() + dt.timedelta(hours=1)  # far past the stale threshold
    assert sweeping.sweep(now=an_hour_later) == []
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING

    seven_hours_later = timezone.now() + dt.timedelta(hours=7)
    assert [ended.pk for ended in sweeping.sweep(now=seven_hours_later)] == [job.pk]
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "No worker took its next step (dump) within PGCLONE_QUEUED_STEP_TIMEOUT" in job.error
    assert unconsumed_queue in job.error
    assert [s.status for s in job.steps.all()] == ["succeeded", "skipped", "skipped"]


def test_a_restore_that_never_started_frees_its_lock(local_location, target, unconsumed_queue):
    key = make_dump("later", local_location)
    waiting = api.restore(key, database="target", pre_swap_hooks=[])
    assert waiting.status == Job.Status.PENDING

    sweeping.sweep(now=timezone.now() + dt.timedelta(hours=7))

    waiting.refresh_from_db()
    assert waiting.status == Job.Status.FAILED and "No worker took its step (fetch)" in (
        waiting.error
    )
    again = api.restore(key, database="target", inline=True, pre_swap_hooks=[])
    assert again.status == Job.Status.SUCCEEDED, again.error


def test_a_worker_killed_with_a_scratch_folder_leaves_none_behind(
    local_location, target, test_database_name, moto_server, tmp_path, settings
):
    key = make_dump("never", local_location)
    before = fingerprint(target)
    queue = own_queue("unpack")
    settings.PGCLONE_CELERY_QUEUE = queue
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    release = tmp_path / "release"
    worker = start_worker(
        test_database_name, tmp_path / "worker.log", moto=moto_server, queue=queue, pool="solo",
        env={"TMPDIR": str(worker_tmp),
             faults.PAUSE: f"{faults.BEFORE_CREATING_TEMP}={release}"},
    )  # fmt: skip
    try:
        job = api.restore(key, database="target", pre_swap_hooks=[])
        wait_for(lambda: Path(f"{release}.started").exists(), what="the restore to start")
        # Where the post-data archive will go (the rows go from the stream to the sessions).
        (folder,) = worker_tmp.glob("pgclone-restore-*")

        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
        sweeping.sweep()  # on the same host: the process is known to be gone
    finally:
        release.touch()
        stop_worker(worker)

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.steps.get(name="restore_temp").status == JobStep.Status.FAILED
    assert f"the restore's scratch folder {folder}" in job.error
    assert list(worker_tmp.iterdir()) == []
    assert fingerprint(target) == before and pgclone_databases() == []


def test_a_new_worker_ends_a_killed_jobs_sessions_and_fails_it_at_once(
    local_location, target, test_database_name, moto_server, tmp_path, settings
):
    """The killed worker's session outlives it (a session waiting for a lock
    doesn't notice its client is gone): the next worker on this host ends it at
    start, rather than leave the job to it."""
    source = f"pgclone_source_{os.getpid()}"
    clone_database(test_database_name, source)
    before = fingerprint(target)
    queue = own_queue("killed")
    settings.PGCLONE_CELERY_QUEUE = queue
    # Copying a database waits while another transaction renames it.
    holder = pg.connect("postgres")
    with holder.cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{source}" RENAME TO "{source}_held"')
    workers = [start_worker(test_database_name, tmp_path / "first.log", moto=moto_server,
                            queue=queue)]  # fmt: skip
    try:
        job = api.restore(f":{source}", database="target", pre_swap_hooks=[])
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            f"AND application_name = 'pgclone:{job.pk}'"
        )
        wait_for(lambda: psql(waiting) == "1", what="the restore to wait for the copy")

        workers[0].process.send_signal(signal.SIGKILL)  # its pool's child dies with it
        workers[0].process.wait()
        workers.append(start_worker(test_database_name, tmp_path / "second.log",
                                    moto=moto_server, queue=queue))  # fmt: skip
        # Its start-up sweep fails the job: at once, not a heartbeat timeout later.
        wait_for(lambda: Job.objects.get(pk=job.pk).status == Job.Status.FAILED, timeout=10,
                 what=f"the job to fail; the new worker said:\n{workers[1].output()}")  # fmt: skip
        job.refresh_from_db()
        assert "Worker lost: the process that ran it" in job.error
        assert job.steps.get(name="restore_temp").status == JobStep.Status.FAILED
        assert psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    f"'pgclone:{job.pk}'") == "0"  # fmt: skip
    finally:
        holder.rollback()  # a session of the job still waiting would now copy the source
        holder.close()
        for worker in workers:
            stop_worker(worker)
        psql(f'DROP DATABASE IF EXISTS "{source}" WITH (FORCE)')
    assert fingerprint(target) == before and pgclone_databases() == []
