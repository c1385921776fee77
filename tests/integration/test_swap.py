"""Failures inside the swap window, forced for real: a lock held elsewhere, the
swap's own connection cut, the worker killed with new connections refused.
Whatever happens, the live database accepts connections afterwards, holds
the old data or the new, and the job ends with its real cause."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest
from django.db import connection, connections

from pgclone import api, sweeping
from pgclone.engine import threads
from pgclone.exceptions import RestoreRefused
from pgclone.models import Job, JobStep
from pgclone.pg import swap as swapping
from tests import faults, pg
from tests.helpers import authors, fingerprint, make_dump, pgclone_databases, psql, wait_for
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)


def accepts_connections(database: str) -> bool:
    """What a user's application sees: can it connect and query?"""
    try:
        conn = pg.connect(database)
    except pg.OperationalError:
        return False
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    finally:
        conn.close()


def markers() -> str:
    return psql(
        "SELECT coalesce(string_agg(datname, ' '), '') FROM pg_database "
        f"WHERE shobj_description(oid, 'pg_database') LIKE '{swapping.MARKER_PREFIX}%'"
    )


@pytest.fixture
def lock_holder(target):
    """A session that holds a lock on the live database's catalog entry (an
    uncommitted COMMENT ON DATABASE), as a concurrent maintenance script would."""
    holder = pg.connect("postgres")
    with holder.cursor() as cursor:
        cursor.execute(f"COMMENT ON DATABASE \"{target}\" IS 'being edited'")
    yield holder
    holder.rollback()
    holder.close()


def test_a_lock_held_past_the_swap_timeout_leaves_the_live_database_open(
    local_location, target, lock_holder, settings
):
    key = make_dump("never", local_location)
    before = fingerprint(target)
    settings.PGCLONE_SWAP_TIMEOUT = 1.5

    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])

    assert job.status == Job.Status.FAILED
    assert job.steps.get(name="swap").status == JobStep.Status.FAILED
    assert "within PGCLONE_SWAP_TIMEOUT" in job.error
    assert f"pid {pg.backend_pid(lock_holder)}" in job.error  # who held it
    assert accepts_connections(target)
    assert fingerprint(target) == before
    assert pgclone_databases() == [] and markers() == ""


def test_a_lock_released_in_time_only_delays_the_swap(local_location, target, lock_holder):
    key = make_dump("after-the-lock", local_location)

    def release_once_the_swap_waits():
        def waiting():
            return (
                psql(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'object' "
                    "AND classid = 'pg_database'::regclass"
                )
                != "0"
            )

        wait_for(waiting, what="the rename to wait for the lock")
        lock_holder.rollback()

    releaser = threading.Thread(target=release_once_the_swap_waits)
    releaser.start()
    try:
        job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])
    finally:
        releaser.join()

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert authors(target) == ["after-the-lock"]
    assert accepts_connections(target) and markers() == ""


def test_the_swap_connection_cut_inside_the_window(local_location, target, monkeypatch):
    """The server ends the swap's own session after connections were refused:
    the swap goes on from a fresh connection."""
    key = make_dump("after-the-cut", local_location)
    original = swapping._rename_pair

    def cut_then_rename(connection, *args):
        if not cut_then_rename.done:
            cut_then_rename.done = True
            psql(f"SELECT pg_terminate_backend({pg.backend_pid(connection)})")
        return original(connection, *args)

    cut_then_rename.done = False
    monkeypatch.setattr(swapping, "_rename_pair", cut_then_rename)

    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])

    assert cut_then_rename.done
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert authors(target) == ["after-the-cut"]
    assert accepts_connections(target) and markers() == ""


def test_a_failure_after_the_commit_is_not_mistaken_for_no_swap(
    local_location, target, monkeypatch
):
    """The renames commit but their answer is lost (the connection drops just
    then): the catalog, not the error, says the swap happened."""
    key = make_dump("committed", local_location)
    original = swapping._rename_pair

    def commit_then_lose_the_answer(connection, *args):
        original(connection, *args)
        raise pg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(swapping, "_rename_pair", commit_then_lose_the_answer)

    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert authors(target) == ["committed"]
    assert accepts_connections(target) and markers() == ""
    assert pgclone_databases() == []


# The worker killed inside the window -----------------------------------------------------


@pytest.fixture
def window_worker(test_database_name, moto_server, tmp_path, settings):
    """A worker of this test's own (solo pool: the step runs in the process a
    SIGKILL hits) that pauses inside the swap window until ``release`` exists."""
    queue = own_queue("swap")
    settings.PGCLONE_CELERY_QUEUE = queue
    release = tmp_path / "release"
    worker = start_worker(
        test_database_name, tmp_path / "worker.log", moto=moto_server, queue=queue, pool="solo",
        env={faults.PAUSE: f"{faults.IN_SWAP_WINDOW}={release}"},
    )  # fmt: skip
    worker.release = release
    worker.queue = queue
    yield worker
    release.touch()
    stop_worker(worker)


def kill(worker) -> None:
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()


def closed(database: str) -> bool:
    return psql(f"SELECT NOT datallowconn FROM pg_database WHERE datname = '{database}'") == "t"


@pytest.mark.matrix
def test_worker_killed_in_the_window_then_the_sweep_reopens_at_once(
    window_worker, local_location, test_database_name, pgclone_cli, settings
):
    """The restore replaces the database that holds the jobs themselves: while
    it is closed no job can be read, and the sweep must not need to."""
    key = make_dump("never-swapped", local_location)
    before = fingerprint(test_database_name)
    settings.PGCLONE_STALE_JOB_SECONDS = 3600  # the process is known gone: no waiting
    job = api.restore(key, pre_swap_hooks=[])
    wait_for(lambda: Path(f"{window_worker.release}.started").exists(), what="the window")
    assert closed(test_database_name)

    kill(window_worker)
    assert closed(test_database_name)  # nobody re-opened it…
    connections.close_all()

    swept = pgclone_cli(
        "sweep", location=local_location, env={"PGCLONE_TEST_STALE_SECONDS": "3600"}
    )  # …until the sweep

    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert "Traceback" not in swept.stderr
    assert accepts_connections(test_database_name)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "is gone, during step swap" in job.error
    assert "The swap did not happen" in job.error and "Removed the temporary database" in job.error
    assert fingerprint(test_database_name) == before
    assert pgclone_databases() == [] and markers() == ""


def test_worker_killed_in_the_window_then_a_restarted_worker_reopens(
    window_worker, local_location, target, test_database_name, moto_server, tmp_path, settings
):
    key = make_dump("never-swapped", local_location)
    before = fingerprint(target)
    job = api.restore(key, database="target", pre_swap_hooks=[])
    wait_for(lambda: Path(f"{window_worker.release}.started").exists(), what="the window")
    kill(window_worker)
    assert closed(target)

    # The same worker comes back (a supervisor restarts it); its stale
    # threshold is long, so only knowing the process is gone can explain a
    # quick recovery.
    again = start_worker(
        test_database_name, tmp_path / "again.log", moto=moto_server, name=window_worker.name,
        queue=window_worker.queue, env={"PGCLONE_TEST_STALE_SECONDS": "3600"},
    )  # fmt: skip
    try:
        wait_for(lambda: accepts_connections(target), what="the new worker to re-open it")

        def ended():
            job.refresh_from_db()
            return job.is_finished

        wait_for(ended, what="the job to be ended by the worker start")
    finally:
        stop_worker(again)
    assert job.status == Job.Status.FAILED and "is gone, during step swap" in job.error
    assert fingerprint(target) == before
    assert pgclone_databases() == []


def test_the_sweep_leaves_a_swap_in_progress_alone(window_worker, local_location, target):
    key = make_dump("swapped-after-all", local_location)
    job = api.restore(key, database="target", pre_swap_hooks=[])
    wait_for(lambda: Path(f"{window_worker.release}.started").exists(), what="the window")

    sweeping.sweep()  # the worker is alive and inside the window

    assert closed(target)
    window_worker.release.touch()

    def ended():
        job.refresh_from_db()
        return job.is_finished

    wait_for(ended, what="the restore to finish")
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert authors(target) == ["swapped-after-all"] and accepts_connections(target)


# Before the window ---------------------------------------------------------------------------


def test_pre_swap_hooks_see_the_live_databases_settings(local_location, target):
    key = make_dump("settings", local_location)
    psql(f"ALTER DATABASE \"{target}\" SET work_mem = '7MB'")
    psql(f"COMMENT ON DATABASE \"{target}\" IS 'the shop'")

    job = api.restore(
        key, database="target", inline=True, pre_swap_hooks=["testapp_mark --setting work_mem"]
    )

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert psql("SELECT note FROM testapp_mark", target) == "7MB"
    assert psql("SHOW work_mem", target) == "7MB"
    comment = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %r"
    assert psql(comment % target) == "the shop"


def test_other_jobs_on_the_database_refuse_a_restore(
    celery_worker, local_location, target, tmp_path
):
    key = make_dump("never", local_location)
    release = tmp_path / "release"
    dump = api.dump(database="target", pre_dump_hooks=[f"testapp_wait {release}"])
    wait_for(lambda: Path(f"{release}.started").exists(), what="the dump's hook")
    try:
        with pytest.raises(RestoreRefused, match=f"Job {dump.pk} \\(dump of"):
            api.restore(key, database="target")
        refused = Job.objects.filter(kind=Job.Kind.RESTORE).get()
        assert refused.status == Job.Status.FAILED and str(dump.pk) in refused.error
        assert "the swap would end its sessions" in refused.error
    finally:
        release.touch()

    def ended():
        dump.refresh_from_db()
        return dump.is_finished

    wait_for(ended, what="the dump to finish")
    assert dump.status == Job.Status.SUCCEEDED, dump.error


def test_the_swap_waits_for_a_job_that_started_after_the_restore(
    celery_worker, local_location, target, tmp_path, settings
):
    """A dump of the live database starts after the restore was accepted: the
    swap must not end its sessions, so it waits, within its bound."""
    key = make_dump("later", local_location)
    restore_gate, dump_gate = tmp_path / "restore-gate", tmp_path / "dump-gate"
    settings.PGCLONE_SWAP_WAIT_SECONDS = 1.0
    restore_done = []
    restorer = threads.start(
        lambda: restore_done.append(
            api.restore(
                key, database="target", inline=True,
                pre_swap_hooks=[f"testapp_wait {restore_gate}"],
            )
        ),
        name="restorer",
    )  # fmt: skip
    try:
        wait_for(lambda: Path(f"{restore_gate}.started").exists(), what="the restore's hook")
        dump = api.dump(database="target", pre_dump_hooks=[f"testapp_wait {dump_gate}"])
        wait_for(lambda: Path(f"{dump_gate}.started").exists(), what="the dump's hook")
        restore_gate.touch()
    finally:
        restore_gate.touch()
        restorer.join()
        dump_gate.touch()
    connection.close()

    restore = restore_done[0]
    assert restore.status == Job.Status.FAILED
    assert f"Job {dump.pk} (dump, step pre_dump) still uses" in restore.error
    assert accepts_connections(target) and authors(target) == ["target-only"]

    def ended():
        dump.refresh_from_db()
        return dump.is_finished

    wait_for(ended, what="the dump to finish unharmed")
    assert dump.status == Job.Status.SUCCEEDED, dump.error
    assert pgclone_databases() == []
