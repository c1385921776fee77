"""How many PostgreSQL connections pgclone opens for the swap step, and for a dump.

Every connection pgclone opens itself goes through ``postgres.open_connection``;
the test counts those made from the swap step's precondition to the end of
the work it leaves for after the job (dropping the replaced database).
Django's own connection to the job tables comes on top (one, kept across
steps, re-opened once when the swap ended it). Each connection is a fork on
the server and a round of authentication: the step should open a handful, not
one per check.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from pgclone import api
from pgclone.models import Job
from pgclone.pg import postgres
from pgclone.pg import swap as swapping
from pgclone.steps.workflows import WORKFLOWS
from tests.helpers import make_dump

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def counted(monkeypatch) -> Iterator[collections.Counter]:
    """Connections opened during the swap step, by database name."""
    opened: collections.Counter = collections.Counter()
    counting = []
    real_open = postgres.open_connection

    def open_connection(conn: postgres.ConnInfo) -> Any:
        if counting:
            opened[conn.name] += 1
        return real_open(conn)

    def counted_call(function: Any) -> Any:
        def call(*args: Any) -> Any:
            counting.append(True)
            try:
                return function(*args)
            finally:
                counting.pop()

        return call

    declared = WORKFLOWS[Job.Kind.RESTORE]
    swap = declared.step("swap").function

    def counted_swap(job: Job) -> Any:
        afterwards = counted_call(swap)(job)
        return counted_call(afterwards) if afterwards else None

    def precondition(job: Job) -> None:
        call = counted_call(declared.precondition) if job.current_step == "swap" else None
        (call or declared.precondition)(job)

    steps = tuple(
        dataclasses.replace(step, function=counted_swap) if step.name == "swap" else step
        for step in declared.steps
    )
    monkeypatch.setattr(postgres, "open_connection", open_connection)
    # A rename that times out is retried on a fresh connection (a session still
    # exiting, a checkpoint): legitimate, and counted apart.
    real_renew = swapping.Session.renew

    def renew(session: swapping.Session) -> Any:
        if session.connection is not None:
            opened["retries"] += 1
        return real_renew(session)

    monkeypatch.setattr(swapping.Session, "renew", renew)
    monkeypatch.setitem(
        WORKFLOWS,
        Job.Kind.RESTORE,
        dataclasses.replace(declared, steps=steps, precondition=precondition),
    )
    yield opened


@pytest.mark.parametrize(
    ("database", "reversible", "most"),
    [
        # The step's own (to the server), the swap's, the drop afterwards; where superuser
        # restores are refused (not in these tests) the privilege check adds one.
        ("target", False, 3),
        ("target", True, 3),
        # The job tables' database: its history is copied across (one connection each side).
        ("default", False, 5),
    ],
)
def test_the_swap_step_opens_a_handful_of_connections(
    counted, local_location, target, database, reversible, most
):
    key = make_dump("counted", local_location)

    job = api.restore(key, database=database, pre_swap_hooks=[], reversible=reversible, inline=True)
    connection.close()  # a restore of the test database ended this connection

    assert job.status == Job.Status.SUCCEEDED, job.error
    total = sum(counted.values()) - 2 * counted["retries"]  # each retry: counted and opened
    print(f"swap step ({database}, reversible={reversible}): {total} connections: {dict(counted)}")
    assert total <= most, dict(counted)


def test_a_dump_reads_the_catalog_before_it_in_one_session(monkeypatch, local_location):
    # Before the dump: one pinned session for every catalog read (what is left
    # out, the server's version, the size, the user table, the role's powers);
    # during it: the snapshot's and the main session's. The project's
    # search_path is read apart (a session of its own, unpinned) and not counted.
    dumped = postgres.conn_info("default").name
    opened: collections.Counter = collections.Counter()
    real_open = postgres.open_connection

    def open_connection(conn: postgres.ConnInfo) -> Any:
        opened[conn.name] += 1
        return real_open(conn)

    monkeypatch.setattr(postgres, "open_connection", open_connection)

    job = api.dump(inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    print(f"dump: {opened[dumped]} connections to the dumped database: {dict(opened)}")
    assert opened[dumped] <= 3, dict(opened)
