"""What a restore from local storage leaves on the worker's disk meanwhile.

A container (every dump since pgclone-container-3), encrypted or not, is
never unpacked: its rows go from the stream to the COPY sessions, and the
files written are its archives of SQL, run only once checked: pre-data
(tables), rest (sequences' values) and post-data (indexes, constraints, for
pg_restore --jobs), none with a row. A plain dump made before the container is still unpacked
into PGCLONE_TEMP_DIR for pg_restore --jobs (which needs a file it can seek
in), unless it is encrypted. Whatever is written is its owner's only (0600,
in a 0700 folder), whatever the process's umask.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest

from pgclone import api
from pgclone.archive import parallel_restore
from pgclone.engine import threads
from pgclone.models import Job
from pgclone.steps import restore as restore_steps
from tests.faults import pause_before
from tests.helpers import authors, make_dump, wait_for
from tests.integration.test_old_dumps import FIXTURES
from tests.integration.test_old_dumps import KEY as OLD_KEY

pytestmark = pytest.mark.django_db(transaction=True)

KEY = pyrage.x25519.Identity.generate()


@pytest.fixture
def scratch(tmp_path: Path, settings) -> Path:
    """PGCLONE_TEMP_DIR of its own; restores with two jobs, without hooks."""
    folder = tmp_path / "scratch"
    folder.mkdir(mode=0o700)
    settings.PGCLONE_TEMP_DIR = str(folder)
    settings.PGCLONE_RESTORE_JOBS = 2
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"pre_swap_hooks": []}}
    return folder


def held_before(monkeypatch, module: Any, name: str, release: Path) -> Path:
    """Restores stop before the first call of ``module.name`` until ``release`` exists."""
    monkeypatch.setattr(module, name, pause_before(getattr(module, name), release))
    return release


@pytest.fixture
def any_umask() -> Iterator[None]:
    """The loosest umask: a file's mode is then only what pgclone asked for."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def restore_held(key: str, release: Path, folder: Path) -> tuple[Job, dict[str, int], bytes]:
    """Restore ``key`` inline (in a thread); while it is held, what ``folder``
    holds (folders' names end with "/") and their modes, and the bytes of its
    post-data archive if there is one. Returns the ended job and those."""
    ended: list[Job] = []
    worker = threads.start(
        lambda: ended.append(api.restore(key, database="target", inline=True)), name="restore"
    )
    try:
        wait_for(lambda: Path(f"{release}.started").exists(), what="the restore to be held")
        found = {
            str(path.relative_to(folder)) + ("/" if path.is_dir() else ""): stat.S_IMODE(
                path.stat().st_mode
            )
            for path in folder.rglob("*")
        }
        post_data = b"".join(path.read_bytes() for path in folder.rglob("post-data"))
    finally:
        release.touch()
        worker.join(timeout=120)
    (job,) = ended
    return job, found, post_data


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_container_leaves_only_its_archives_of_sql_its_owners_only(
    encrypted, scratch, any_umask, monkeypatch, local_location, target, settings, tmp_path
):
    if encrypted:
        settings.PGCLONE_ENCRYPTION_RECIPIENTS = [str(KEY.to_public())]
    key = make_dump("never-on-disk", local_location)
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = []
    identity = tmp_path / "restore.agekey"
    identity.write_text(f"{KEY}\n")
    identity.chmod(0o600)
    settings.PGCLONE_ENCRYPTION_IDENTITIES = [str(identity)]
    # Held once every row is in, before pg_restore --jobs reads the post-data archive.
    restore = parallel_restore.ParallelRestore
    release = held_before(monkeypatch, restore, "_restore_post_data", tmp_path / "release")

    job, found, post_data = restore_held(key, release, scratch)

    assert job.status == Job.Status.SUCCEEDED, job.error
    (folder,) = [path for path in found if path.endswith("/")]
    archives = {f"{folder}{name}": 0o600 for name in ("pre-data", "rest", "post-data")}
    assert found == {folder: 0o700, **archives}
    assert post_data.startswith(b"PGDMP") and b"never-on-disk" not in post_data  # no row
    assert list(scratch.iterdir()) == []
    message = job.steps.get(name="restore_temp").message
    assert "COPY of the tables in 2 sessions" in message and "pg_restore --jobs=2" in message
    assert authors(target) == ["never-on-disk"]


def test_a_plain_dump_from_before_the_container_is_unpacked_its_owners_only(
    scratch, any_umask, monkeypatch, local_location, target, tmp_path
):
    shutil.copytree(FIXTURES, local_location, dirs_exist_ok=True)
    release = held_before(monkeypatch, restore_steps, "_create_temp", tmp_path / "release")

    job, found, _ = restore_held(OLD_KEY, release, scratch)

    assert job.status == Job.Status.SUCCEEDED, job.error
    (folder,) = [path for path in found if path.endswith("/")]
    assert found == {folder: 0o700, f"{folder}dump": 0o600}  # pg_dump's archive, for --jobs
    assert list(scratch.iterdir()) == []
    assert "pg_restore --jobs=2" in job.steps.get(name="restore_temp").message
    assert authors(target) == ["written by pgclone 0.2.0.dev0 before the restructure"]
