"""A follower is woken by its job's changes (NOTIFY), not by polling: it sees a
job's end at once and reads nothing while the job is quiet. Real PostgreSQL,
the notifications sent by the job transitions themselves."""

from __future__ import annotations

import io
import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pgclone.engine import jobs, threads, wakeups
from pgclone.management.commands import _follow
from pgclone.models import Job
from tests.helpers import wait_for

# The driver decides how notifications are read: every combination runs these.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.matrix]


def new_job() -> Job:
    return jobs.create_job(
        Job.Kind.DUMP, ("pre_dump", "dump"),
        database_alias="default", database_name="shop", config_name="default", options={},
    )  # fmt: skip


def later(seconds: float, action) -> threading.Thread:
    """``action`` run ``seconds`` from now in a thread of its own (its own
    session): the time the job stays quiet, which is what is tested."""

    def run() -> None:
        time.sleep(seconds)
        action()

    return threads.start(run, name="test-later")


def test_a_listener_wakes_when_its_job_changes_and_not_for_another():
    job, other = new_job(), new_job()
    with wakeups.listening(job.pk) as listener:
        assert listener is not None
        assert listener.wait(0.2) is False  # nothing happened

        jobs.end_job(other.pk, Job.Status.CANCELLED, "Another job.")
        assert listener.wait(0.3) is False  # not its job

        worker = later(0.2, lambda: jobs.end_job(job.pk, Job.Status.FAILED, "Stopped."))
        began = time.monotonic()
        assert listener.wait(10) is True
        assert time.monotonic() - began < 2  # woken, not timed out
        worker.join()


def test_a_listener_comes_back_after_its_session_is_ended():
    job = new_job()
    with wakeups.listening(job.pk) as listener:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = %s AND pid <> pg_backend_pid()",
                [f'LISTEN "{wakeups.channel(job.pk)}"'],
            )
            assert cursor.fetchone() == (True,)
        assert listener.wait(10) is True  # its end makes the follower read again
        wait_for(lambda: listener.wait(0.1), timeout=10, what="the listener to reopen")

        worker = later(0.2, lambda: jobs.start_progress(job.pk, 100))
        began = time.monotonic()
        assert listener.wait(10) is True
        assert time.monotonic() - began < 2
        worker.join()


def test_following_a_quiet_job_reads_it_rarely_and_ends_with_it():
    job = new_job()
    step = job.steps.get(name="pre_dump")
    assert jobs.claim_step(job, step, "test-worker")
    ended_at: list[float] = []

    def finish() -> None:
        jobs.succeed_step(job.pk, "pre_dump")
        jobs.fail_step(job.pk, "dump", "The disk is full.")
        ended_at.append(time.monotonic())

    out = io.StringIO()
    finisher = later(2.5, finish)
    with CaptureQueriesContext(connection) as reads:
        followed = _follow.follow(job.pk, out, tty=False)
    returned = time.monotonic()
    finisher.join()

    assert followed.status == Job.Status.FAILED
    assert "dump: FAILED" in out.getvalue()
    assert returned - ended_at[0] < 0.5  # woken by the end, not a poll a second later
    # Two queries a read: the first, about one a second while quiet, and the end.
    # Polling read every 20 ms at first: some 250 queries over those 2.5 s.
    assert len(reads) <= 16, [q["sql"] for q in reads]
