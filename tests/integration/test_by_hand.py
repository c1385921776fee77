"""A dump restores by hand with standard tools: the commands of "Dump formats"
in docs/how-it-works.md (zstd, tar, psql, pg_restore; no pgclone code), run
as they are written on real dumps, give back every row, sequence and index."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import zstandard

from pgclone import api, payloads, verifying
from pgclone.archive import containers, parallel_copy
from pgclone.models import Job
from pgclone.storage import keys, storage_for
from tests.helpers import (
    FINGERPRINT_TABLES,
    by_hand_restore_script,
    fingerprint,
    psql,
    restore_by_hand,
    scratch_database,
)
from tests.testapp.models import Author, Book, Secret, Tag

pytestmark = pytest.mark.django_db(transaction=True)

# Values COPY text escapes: tabs, newlines, backslashes, and text beyond ASCII.
NAMES = ["tab\there", "line\nbreak", "back\\slash", "Zoë 東京", "\\N is not NULL"]


@pytest.fixture
def many_rows() -> None:
    tag = Tag.objects.create(name="classic")
    authors = Author.objects.bulk_create(
        [Author(name=NAMES[i % len(NAMES)] + f" {i}") for i in range(3000)]
    )
    for author in authors[:50]:
        Book.objects.create(author=author, title=f"Book by {author.pk}").tags.add(tag)
    Secret.objects.create(value="s3cret")


@pytest.fixture
def split_small_tables(monkeypatch) -> None:
    """Small tables copied as big ones are: testapp_author by psql, in block ranges."""
    monkeypatch.setattr(parallel_copy, "PSQL_BYTES", 8 * 1024)
    monkeypatch.setattr(parallel_copy, "MIN_BYTES", 64 * 1024)


def stored(job: Job, location: str) -> tuple[bytes, dict]:
    key = keys.parse_key(job.dump_key)
    storage = storage_for(location)
    with storage.open(key) as stream:
        return stream.read(), storage.read_manifest(key)


def tar_members(data: bytes) -> dict[str, bytes]:
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar}


def next_author_id(database: str) -> str:
    return psql("SELECT nextval(pg_get_serial_sequence('testapp_author', 'id'))", database)


def test_the_documented_commands_restore_a_plain_dump(
    local_location, test_database_name, many_rows, split_small_tables, settings
):
    settings.PGCLONE_DUMP_JOBS = 3
    psql("ANALYZE testapp_author", test_database_name)  # its size known: copied first
    job = api.dump(inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    data, manifest = stored(job, local_location)
    parsed = payloads.Manifest.from_dict(manifest)
    assert parsed.format == containers.FORMAT
    assert not payloads.counts_as_scrubbed(parsed) and not parsed.subset and parsed.plan is None
    rows = {table["name"]: table["rows"] for table in manifest["tables"]}
    assert rows["testapp_author"] == 3000 and rows["pgclone_job"] == 0
    members = tar_members(data)
    plan = json.loads(members["plan.json"])
    prefix = next(t["member"] for t in plan["tables"] if t["name"] == "testapp_author")
    ranges = [name for name in members if name.startswith(prefix + "/0")]
    assert len(ranges) >= 3 and members[f"{prefix}/end"] == b""  # one member a range at least

    with scratch_database() as restored:
        restore_by_hand(data, restored)

        assert fingerprint(restored) == fingerprint(test_database_name)
        assert psql("SELECT count(*) FROM testapp_book_tags", restored) == "50"
        assert psql("SELECT count(*) FROM pgclone_job", restored) == "0"
        # sequences (rest) and indexes and constraints (post-data) are back too
        assert next_author_id(restored) == next_author_id(test_database_name)
        constraints = "SELECT count(*) FROM pg_constraint WHERE conrelid = 'testapp_book'::regclass"
        assert psql(constraints, restored) == psql(constraints, test_database_name)

    verified = verifying.verify(storage_for(local_location), keys.parse_key(job.dump_key))
    assert verified["looked_inside"] and "planned_tables" not in verified


def test_the_documented_commands_restore_a_dump_with_models_left_out(
    local_location, test_database_name, many_rows
):
    job = api.dump(exclude_models=["testapp.Secret"], inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    data, manifest = stored(job, local_location)

    with scratch_database() as restored:
        restore_by_hand(data, restored)

        assert psql("SELECT count(*) FROM testapp_secret", restored) == "0"  # its schema kept
        kept = [table for table in FINGERPRINT_TABLES if table != "testapp_secret"]
        source, copy = fingerprint(test_database_name), fingerprint(restored)
        assert {t: copy[t] for t in kept} == {t: source[t] for t in kept}
    assert manifest["excluded_tables"] and not manifest["scrubbed"]


def test_the_documented_commands_are_plain_shell():
    script = by_hand_restore_script()
    programs = {line.split()[0] for line in script.splitlines() if line and line[0].isalpha()}
    assert programs <= {"mkdir", "cat", "psql", "while", "done", "SELECT", "FROM", "SQL"}
    assert "zstd -d" in script and "tar -xf" in script and "pg_restore" in script
