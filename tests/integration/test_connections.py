"""How many PostgreSQL connections pgclone opens for the swap step.

Every connection pgclone opens itself goes through ``postgres.open_connection``;
the test counts those made while the swap step runs (Django's own connection
to the job tables is one more, kept across steps). Each connection is a fork
on the server and a round of authentication: the swap step should open a
handful, not one per check.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator

import pytest

from pgclone import api, postgres
from pgclone.models import Job
from pgclone.steps import WORKFLOWS, restore_swap
from tests.conftest import make_dump

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def counted(monkeypatch) -> Iterator[collections.Counter]:
    """Connections opened during the swap step, by database name."""
    opened: collections.Counter = collections.Counter()
    in_swap = []
    real_open, real_swap = postgres.open_connection, restore_swap.swap

    def open_connection(conn):
        if in_swap:
            opened[conn.name] += 1
        return real_open(conn)

    def swap(job):
        in_swap.append(True)
        try:
            return real_swap(job)
        finally:
            in_swap.clear()

    monkeypatch.setattr(postgres, "open_connection", open_connection)
    declared = WORKFLOWS[Job.Kind.RESTORE]
    steps = tuple(
        dataclasses.replace(step, function=swap) if step.name == "swap" else step
        for step in declared.steps
    )
    monkeypatch.setitem(WORKFLOWS, Job.Kind.RESTORE, dataclasses.replace(declared, steps=steps))
    yield opened


@pytest.mark.parametrize("reversible", [False, True])
def test_the_swap_step_opens_a_handful_of_connections(counted, local_location, target, reversible):
    key = make_dump("counted", local_location)

    job = api.restore(key, database="target", pre_swap_hooks=[], reversible=reversible, inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    print(
        f"swap step (reversible={reversible}): {sum(counted.values())} connections, {dict(counted)}"
    )
    assert sum(counted.values()) <= (6 if reversible else 5), dict(counted)
