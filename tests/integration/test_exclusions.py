"""Rows left out of a dump (exclude_models, pgclone's own job tables) and the
foreign keys that reference them, Django's or not: the dump must restore, and
``verify`` must catch a dump that would not."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from django.utils import timezone

from pgclone import api
from pgclone.exceptions import DumpDamaged
from pgclone.models import Job
from pgclone.storage import keys, storage_for
from tests.helpers import psql, restore_into, scratch_database
from tests.testapp.models import Author, Secret

pytestmark = pytest.mark.django_db(transaction=True)

RAW_SCHEMA = "pgclone Raw"
NOTE = ("public", "pgclone_raw_note")  # references testapp_secret
COPY = (RAW_SCHEMA, 'Note "Copy"')  # references NOTE
JOB_REF = (RAW_SCHEMA, "job_ref")  # references pgclone_job
# How messages name them: quoted where SQL needs it.
NAMED = {NOTE: "public.pgclone_raw_note", COPY: '"pgclone Raw"."Note ""Copy"""',
         JOB_REF: '"pgclone Raw".job_ref'}  # fmt: skip


def sql_name(table: tuple[str, str]) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in table)


@pytest.fixture
def raw_tables(test_database_name: str) -> Iterator[str]:
    """Tables made by raw SQL, outside Django's models, each with a row that
    references rows a dump leaves out (directly or through another table)."""
    secret = Secret.objects.create(value="hidden")
    job = Job.objects.create(kind=Job.Kind.DUMP)
    psql(
        f"CREATE TABLE {sql_name(NOTE)} (id int PRIMARY KEY, secret_id bigint "
        "CONSTRAINT raw_note_secret_fk REFERENCES testapp_secret (id));"
        f'CREATE SCHEMA "{RAW_SCHEMA}";'
        f"CREATE TABLE {sql_name(COPY)} (id int PRIMARY KEY, "
        f"note_id int REFERENCES {sql_name(NOTE)} (id));"
        f"CREATE TABLE {sql_name(JOB_REF)} (job_id uuid "
        "CONSTRAINT job_ref_job_fk REFERENCES pgclone_job (id));"
        f"INSERT INTO {sql_name(NOTE)} VALUES (1, {secret.pk});"
        f"INSERT INTO {sql_name(COPY)} VALUES (1, 1);"
        f"INSERT INTO {sql_name(JOB_REF)} VALUES ('{job.pk}');",
        test_database_name,
    )
    yield test_database_name
    # Before the test's flush, which could not truncate the tables referenced.
    psql(
        f'DROP SCHEMA IF EXISTS "{RAW_SCHEMA}" CASCADE; DROP TABLE IF EXISTS {sql_name(NOTE)}',
        test_database_name,
    )


def count(table: tuple[str, str], database: str) -> int:
    return int(psql(f"SELECT count(*) FROM {sql_name(table)}", database))


def test_rows_referencing_excluded_rows_are_left_out_whoever_made_their_table(
    raw_tables, local_location
):
    Author.objects.create(name="kept")

    job = api.dump(config="no_secrets", inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    message = job.steps.get(name="dump").message
    for table in (NOTE, COPY, JOB_REF):
        assert NAMED[table] in message, message
    assert api.verify(job.dump_key)["archive_entries"] > 0
    with scratch_database() as scratch:
        restore_into((Path(local_location) / job.dump_key).read_bytes(), scratch)
        assert [count(table, scratch) for table in (NOTE, COPY, JOB_REF)] == [0, 0, 0]
        assert psql("SELECT name FROM testapp_author", scratch) == "kept"
        assert psql("SELECT count(*) FROM testapp_secret", scratch) == "0"


def store_dump(location: str, database: str, raw: bytes) -> str:
    """Store a custom-format archive as a complete dump, with a correct manifest."""
    storage = storage_for(location)
    key = keys.make_key(database, "old", timezone.now())
    data = zstandard.ZstdCompressor().compress(raw)
    upload = storage.start_upload(key, "old-dump")
    upload.write(data)
    manifest = {
        "key": str(key),
        "database": database,
        "config": "old",
        "created": key.created.isoformat(),
        "format": "postgresql-custom",
        "compression": "zstd",
        "size": len(data),
        "raw_size": len(raw),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    storage.complete(upload.close(), manifest)
    return str(key)


def test_verify_catches_a_dump_that_left_out_referenced_rows(
    raw_tables, local_location, pgclone_cli
):
    # As pgclone dumped before it followed the database's own foreign keys.
    excluded = ("testapp_secret", "pgclone_job", "pgclone_jobstep")
    raw = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-Fc", "-d", raw_tables,
         *(f"--exclude-table-data={table}" for table in excluded)],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    key = store_dump(local_location, raw_tables, raw)
    with scratch_database() as scratch, pytest.raises(subprocess.CalledProcessError):
        restore_into((Path(local_location) / key).read_bytes(), scratch)  # it really fails

    with pytest.raises(DumpDamaged) as caught:
        api.verify(key)

    message = str(caught.value)
    assert message.startswith(f"Dump {key} can't be restored as it is:")
    assert (
        '- foreign key "raw_note_secret_fk" of public.pgclone_raw_note references '
        "public.testapp_secret, whose rows are not in the dump while those of "
        "public.pgclone_raw_note are: a restore would fail re-creating it unless "
        "public.pgclone_raw_note is empty." in message
    )
    assert '"job_ref_job_fk" of "pgclone Raw".job_ref references public.pgclone_job' in message
    assert NAMED[COPY] not in message  # the rows it references are in the dump
    result = pgclone_cli("verify", key, location=local_location)
    assert result.returncode == 1
    assert "a restore would fail re-creating it unless public.pgclone_raw_note is empty" in (
        result.stderr
    )
