"""A worker that waits for work holds no session on the job tables' database.

An idle session there is not harmless: ``CREATE DATABASE … TEMPLATE`` of that
database fails while any session is connected to it, and each one holds a
server process for as long as the worker runs.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import psql, wait_for
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_started_worker_keeps_no_session_open(test_database_name, moto_server, tmp_path):
    # libpq names the worker's sessions after PGAPPNAME: Django sets no
    # application_name of its own (pgclone's own sessions are named "pgclone").
    name = f"pgclone_idle_worker_{os.environ['PGCLONE_TEST_SESSION']}"
    worker = start_worker(
        test_database_name,
        tmp_path / "worker.log",
        moto=moto_server,
        queue=own_queue("idle"),
        env={"PGAPPNAME": name},
    )
    try:
        # Its start-up work (the worker_ready sweep) is over once it says it is ready.
        wait_for(lambda: " ready." in worker.output(), what="the worker's start-up")

        def sessions() -> str:
            return psql(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity "
                f"WHERE application_name = '{name}' AND datname = '{test_database_name}'"
            )

        assert worker.process.poll() is None
        wait_for(lambda: sessions() == "0", timeout=10, what="no session of the idle worker")
    finally:
        stop_worker(worker)
