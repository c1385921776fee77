"""A dump written by an earlier pgclone still lists, verifies and restores.

tests/fixtures/dumps holds a small dump (and its manifest) made by pgclone at
commit 0f60cea, before the restructure: the stored format is a promise to
every dump already in someone's storage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pgclone import api
from pgclone.models import Job
from tests.helpers import authors, pgclone_databases

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dumps"
KEY = "pgclone_fixture_src/20261125T194134.731221Z.default.dump"


@pytest.fixture
def old_dump(local_location: str) -> str:
    shutil.copytree(FIXTURES, local_location, dirs_exist_ok=True)
    return KEY


def test_an_old_dump_lists_verifies_and_restores(old_dump, target):
    assert [str(key) for key in api.ls("pgclone_fixture_src")] == [old_dump]
    verified = api.verify(old_dump)
    assert verified["pgclone_version"] == "0.2.0.dev0" and verified["archive_entries"] > 0

    job = api.restore(old_dump, database="target", pre_swap_hooks=["migrate"], inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert authors(target) == ["written by pgclone 0.2.0.dev0 before the restructure"]
    assert pgclone_databases() == []
