"""Restores in a row while other sessions write and checkpoint: the load under
which a guard on the renames once cancelled the swap's COMMIT and left the
live database refusing every connection."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from pgclone import api
from pgclone.models import Job
from tests import pg
from tests.helpers import authors, clone_database, pgclone_databases, psql, wait_for
from tests.integration.test_swap import accepts_connections
from tests.testapp.models import Author

pytestmark = [pytest.mark.stress, pytest.mark.django_db(transaction=True)]
RESTORES = 20


def write_and_checkpoint(database: str, table: str, stop: threading.Event) -> None:
    """Another application's session: bulk writes into a table of its own (so two
    writers never deadlock each other), with checkpoints, until stopped."""
    conn = pg.connect(database, autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (id serial, body text)")
        rounds = 0
        while not stop.is_set():
            cursor.execute(f"INSERT INTO {table} (body) SELECT repeat(md5(random()::text), 30) "
                           "FROM generate_series(1, 2000)")  # fmt: skip
            rounds += 1
            if rounds % 5 == 0:
                cursor.execute("CHECKPOINT")
                cursor.execute(f"TRUNCATE {table}")
    conn.close()


def query_in_a_loop(database: str, stop: threading.Event, refused: list) -> None:
    """The site itself: connects again and again; records each refusal with how
    long the site had been refused by then (since its last good connection)."""
    last_good = time.monotonic()
    while not stop.is_set():
        try:
            conn = pg.connect(database)
            conn.close()
            last_good = time.monotonic()
        except pg.OperationalError as exc:
            refused.append((time.monotonic() - last_good, str(exc)))
            time.sleep(0.01)


# What a site sees during a swap: the live database refusing connections, or for
# an instant not there under its name (between the two renames of one transaction
# a new session can't see either; the catalog lookup then misses it).
SWAP_REFUSALS = ("is not currently accepting connections", "does not exist")


@pytest.fixture
def sources(test_database_name):
    names = {}
    for label in ("alpha", "beta"):
        Author.objects.all().delete()
        Author.objects.create(name=label)
        names[label] = f"pgclone_src_{label}_{uuid.uuid4().hex[:6]}"
        clone_database(test_database_name, names[label])
    Author.objects.all().delete()
    yield names
    for name in names.values():
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_restores_in_a_row_under_write_and_checkpoint_load(celery_worker, sources, target):
    load_db = f"pgclone_load_{uuid.uuid4().hex[:6]}"
    psql(f'CREATE DATABASE "{load_db}"')
    stop, refused = threading.Event(), []
    load = [
        threading.Thread(target=write_and_checkpoint, args=(load_db, "load_a", stop)),
        threading.Thread(target=write_and_checkpoint, args=(load_db, "load_b", stop)),
        threading.Thread(target=query_in_a_loop, args=(target, stop, refused)),
    ]
    for thread in load:
        thread.start()
    outcomes = []
    try:
        held = ["target-only"]
        for number in range(RESTORES):
            label = ("alpha", "beta")[number % 2]
            job = api.restore(f":{sources[label]}", database="target", pre_swap_hooks=[])

            def ended(job=job):
                job.refresh_from_db()
                return job.is_finished

            wait_for(ended, timeout=60, what=f"restore {number + 1} to end")
            outcomes.append(job.status)
            assert accepts_connections(target), f"restore {number + 1}: {job.error}"
            if job.status == Job.Status.SUCCEEDED:
                held = [label]
            assert authors(target) == held, f"restore {number + 1}: {job.error}"
            assert not Job.objects.filter(status=Job.Status.RUNNING).exists()
    finally:
        stop.set()
        for thread in load:
            thread.join()
        psql(f'DROP DATABASE IF EXISTS "{load_db}" WITH (FORCE)')
    assert outcomes == [Job.Status.SUCCEEDED] * RESTORES
    # The site was refused only by the swaps, and never for long: the longest
    # stretch without a connection stays far below one second under this load.
    assert all(any(what in message for what in SWAP_REFUSALS) for _, message in refused), refused
    longest = max((waited for waited, _ in refused), default=0.0)
    assert longest < 1.0, f"the site went {longest:.2f} s without a connection"
    assert pgclone_databases() == []
