"""The programs pgclone runs get none of the worker's secrets.

A worker holds the age identity that decrypts dumps and the storage's cloud
credentials in its environment; pg_restore runs code that comes with the
dump, and any program could print its environment into an error message. The
test reads the environment of a real pg_restore while a worker runs it
(held inside the restore by a CHECK constraint that waits for a file to go).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from pgclone import api
from pgclone.models import Job
from pgclone.pg import databases
from tests.helpers import make_dump, psql, wait_for
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

GATE = """
CREATE FUNCTION pgclone_gate() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    FOR i IN 1..1200 LOOP  -- at most a minute
        EXIT WHEN pg_catalog.pg_stat_file('{closed}', true) IS NULL;
        PERFORM pg_catalog.pg_sleep(0.05);
    END LOOP;
    RETURN true;
END $f$;
CREATE TABLE gated (id int CHECK (pgclone_gate()));
INSERT INTO gated VALUES (1);
"""


@pytest.fixture
def gate(test_database_name: str) -> Iterator[Path]:
    """A file whose presence holds every restore of the next dump inside pg_restore
    (requested after ``target``, which is made by a restore too)."""
    folder = Path(tempfile.mkdtemp(prefix="pgclone-gate-"))
    folder.chmod(0o755)  # the server's user looks for the file
    closed = folder / "closed"
    psql(GATE.replace("{closed}", str(closed)), test_database_name)
    closed.touch()
    yield closed
    psql("DROP TABLE IF EXISTS gated; DROP FUNCTION IF EXISTS pgclone_gate()", test_database_name)
    shutil.rmtree(folder)


def pg_restore_into(database: str) -> int | None:
    """The pid of a pg_restore loading ``database``, if one runs."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if argv and argv[0].endswith(b"pg_restore") and database.encode() in b" ".join(argv):
            return int(cmdline.parent.name)
    return None


def test_pg_restore_gets_none_of_the_workers_secrets(
    target, gate, local_location, tmp_path, test_database_name, moto_server, settings
):
    key = make_dump("gated", local_location)
    queue = own_queue("environment")
    settings.PGCLONE_CELERY_QUEUE = queue
    identity = str(pyrage.x25519.Identity.generate())
    worker = start_worker(
        test_database_name,
        tmp_path / "worker.log",
        moto=moto_server,
        queue=queue,
        pool="solo",
        env={"PGCLONE_AGE_IDENTITY": identity, "AWS_SECRET_ACCESS_KEY": "worker-aws-secret"},
    )
    try:
        job = api.restore(key, database="target", pre_swap_hooks=[])
        pid = wait_for(
            lambda: pg_restore_into(databases.temp_name(job.pk)), timeout=60, what="pg_restore"
        )
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        gate.unlink()
        job = wait_for(
            lambda: Job.objects.filter(pk=job.pk, status__in=["succeeded", "failed"]).first(),
            timeout=60,
            what="the restore to end",
        )
    finally:
        stop_worker(worker)

    assert job.status == Job.Status.SUCCEEDED, job.error
    names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
    assert "PATH" in names
    leaked = names & {"PGCLONE_AGE_IDENTITY", "AWS_SECRET_ACCESS_KEY", "DJANGO_SETTINGS_MODULE"}
    assert leaked == set()
    assert identity.encode() not in environ and b"worker-aws-secret" not in environ
