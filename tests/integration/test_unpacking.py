"""What a restore from local storage leaves on the worker's disk meanwhile.

A parallel restore unpacks the dump into PGCLONE_TEMP_DIR (pg_restore --jobs
needs a file it can seek in). An encrypted dump is never unpacked: decrypted
there, it would outlive a killed worker until the next sweep, readable by
whoever can read that folder. Any file unpacked is its owner's only (0600),
whatever the process's umask.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from pgclone import api
from pgclone.engine import threads
from pgclone.models import Job
from pgclone.steps import restore as restore_steps
from tests.faults import pause_before
from tests.helpers import authors, make_dump, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

KEY = pyrage.x25519.Identity.generate()


@pytest.fixture
def scratch(tmp_path: Path, settings) -> Path:
    """PGCLONE_TEMP_DIR of its own; restores unpack (two jobs), without hooks."""
    folder = tmp_path / "scratch"
    folder.mkdir(mode=0o700)
    settings.PGCLONE_TEMP_DIR = str(folder)
    settings.PGCLONE_RESTORE_JOBS = 2
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"pre_swap_hooks": []}}
    return folder


@pytest.fixture
def held(tmp_path: Path, monkeypatch) -> Path:
    """Restores stop just before the temporary database is created (after an
    unpacking, before pg_restore) until the returned path exists."""
    release = tmp_path / "release"
    monkeypatch.setattr(
        restore_steps, "_create_temp", pause_before(restore_steps._create_temp, release)
    )
    return release


@pytest.fixture
def any_umask() -> Iterator[None]:
    """The loosest umask: a file's mode is then only what pgclone asked for."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def restore_held(key: str, release: Path, folder: Path) -> tuple[Job, dict[str, int]]:
    """Restore ``key`` inline (in a thread); while it is held, what ``folder``
    holds (folders' names end with "/") and their modes. Returns the ended job
    and those."""
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
    finally:
        release.touch()
        worker.join(timeout=120)
    (job,) = ended
    return job, found


def test_an_encrypted_dump_is_restored_streamed_never_unpacked(
    scratch, held, local_location, target, settings, tmp_path
):
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = [str(KEY.to_public())]
    key = make_dump("sealed-and-streamed", local_location)
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = []
    identity = tmp_path / "restore.agekey"
    identity.write_text(f"{KEY}\n")
    identity.chmod(0o600)
    settings.PGCLONE_ENCRYPTION_IDENTITIES = [str(identity)]

    job, found = restore_held(key, held, scratch)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert found == {}  # nothing decrypted on this disk, while it restored
    assert list(scratch.iterdir()) == []
    message = job.steps.get(name="restore_temp").message
    assert message.startswith(f"Streamed {key} into ") and "--jobs" not in message
    assert authors(target) == ["sealed-and-streamed"]


def test_an_unpacked_dump_is_its_owners_only(scratch, held, any_umask, local_location, target):
    key = make_dump("unpacked-0600", local_location)

    job, found = restore_held(key, held, scratch)

    assert job.status == Job.Status.SUCCEEDED, job.error
    # The container, one file a stream, before pg_restore --jobs=2 and the COPYs read them.
    (folder,) = [path for path in found if path.endswith("/") and path.count("/") == 1]
    files = {path: mode for path, mode in found.items() if not path.endswith("/")}
    assert found[folder] == 0o700 and found[f"{folder}dump/"] == 0o700
    assert f"{folder}dump/pre-data" in files and set(files.values()) == {0o600}
    assert set(found) == {folder, f"{folder}dump/", *files}
    assert "pg_restore --jobs=2" in job.steps.get(name="restore_temp").message
    assert authors(target) == ["unpacked-0600"]
