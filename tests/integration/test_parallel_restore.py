"""A container restores in several sessions at once, from local storage and S3
alike, encrypted or not, with a scratch folder far smaller than the dump.

The big test's worker runs in a mount namespace of its own where its
PGCLONE_TEMP_DIR is a tmpfs of 1 MiB plus the dump's schema archives: a
restore that unpacked the dump (tens of MiB here) would fill it and fail.
The folder's use is sampled through /proc/PID/root while the job runs, and
so are the COPY sessions loading the temporary database.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest
import zstandard

from pgclone import api
from pgclone.models import Job, JobStep
from pgclone.pg import databases
from tests import pg
from tests.helpers import (
    authors,
    make_dump,
    pgclone_databases,
    psql,
    replace_dump_bytes,
    s3_client,
    scratch_database,
    wait_for,
)
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024
KEY = pyrage.x25519.Identity.generate()
# Most of the data in one table (about 75 MB of COPY text), which two sessions
# must share; a smaller one beside it, with a foreign key to it.
BULK = """
CREATE TABLE bulk (id bigint PRIMARY KEY, body text NOT NULL);
INSERT INTO bulk SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 560000) g;
CREATE TABLE side (id int PRIMARY KEY, bulk_id bigint REFERENCES bulk, note text);
INSERT INTO side SELECT g, g * 7, 'note ' || g FROM generate_series(1, 30000) g;
CREATE INDEX side_note ON side (note);
"""


def contents(database: str) -> dict[str, str]:
    """Each table's row count and a checksum of its rows, in key order."""
    return {
        table: psql(
            f"SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY t.id)) FROM {table} t",
            database,
        )
        for table in ("bulk", "side")
    }


@pytest.fixture
def bulk(target: str) -> str:
    psql(BULK, target)
    return target


def can_unshare() -> str:
    """Why a mount namespace with a tmpfs can't be made here ('' if it can)."""
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        text=True,
    )
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def tmpfs_prefix(folder: Path, size: int) -> tuple[str, ...]:
    """What starts the worker in a mount namespace of its own, ``folder`` a tmpfs
    of ``size`` bytes there (the worker execs in place: its pid is the process's)."""
    script = f'mount -t tmpfs -o size={size},mode=0700 tmpfs "$1" && shift && exec "$@"'
    return ("unshare", "-rm", "sh", "-c", script, "sh", str(folder))


def stored_bytes(location: str, key: str, moto_server: str) -> bytes:
    if not location.startswith("s3://"):
        return (Path(location) / key).read_bytes()
    bucket, prefix = location.removeprefix("s3://").split("/", 1)
    return s3_client(moto_server).get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()


def schema_archive_bytes(stored: bytes, encrypted: bool) -> int:
    """The size of the container's pre-data and post-data archives."""
    compressed = pyrage.decrypt(stored, [KEY]) if encrypted else stored
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed))
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        return sum(
            member.size for member in tar if member.name.startswith(("pre-data/", "post-data/"))
        )


class Sampled:
    """What a test sees of a restore while it runs: the most COPY FROM sessions
    on its temporary database at once (of one table at once), and the most
    bytes its worker's temp folder held."""

    def __init__(self, job: Job, pid: int, folder: Path) -> None:
        self.job = job
        self.temp = databases.temp_name(job.pk)
        self.folder = f"/proc/{pid}/root{folder}"  # the folder as the worker sees it
        self.sessions = self.one_table = self.peak = 0
        self._connection = pg.connect("postgres", autocommit=True)

    def sample(self) -> None:
        with self._connection.cursor() as cursor:
            cursor.execute(
                "SELECT relid FROM pg_stat_progress_copy "
                "WHERE datname = %s AND command = 'COPY FROM'",
                [self.temp],
            )
            tables = [relid for (relid,) in cursor.fetchall()]
        self.sessions = max(self.sessions, len(tables))
        self.one_table = max([self.one_table, *(tables.count(relid) for relid in tables)])
        with_stats = os.statvfs(self.folder)
        self.peak = max(self.peak, (with_stats.f_blocks - with_stats.f_bfree) * with_stats.f_frsize)

    def until_finished(self, timeout: float = 300) -> Job:
        def finished() -> bool:
            self.sample()
            self.job.refresh_from_db()
            return self.job.is_finished

        try:
            wait_for(finished, timeout=timeout, what="the restore to end")
        finally:
            self._connection.close()
        return self.job


@pytest.mark.parametrize("where", ["local", "s3-encrypted"])
def test_a_worker_with_a_tiny_temp_dir_loads_one_big_table_in_two_sessions_at_once(
    where, bulk, request, tmp_path, settings, test_database_name, moto_server
):
    if why := can_unshare():
        pytest.skip(f"no mount namespace for the worker's tmpfs here (unshare -rm: {why})")
    encrypted = where == "s3-encrypted"
    location = request.getfixturevalue("s3_location" if encrypted else "local_location")
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = [str(KEY.to_public())] if encrypted else []
    made = api.dump(database="target", inline=True)
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = []
    assert made.status == Job.Status.SUCCEEDED, made.error
    stored = stored_bytes(location, made.dump_key, moto_server)
    schema = schema_archive_bytes(stored, encrypted)
    assert len(stored) > 10 * MIB and made.result["manifest"]["raw_size"] > 60 * MIB
    before = contents(bulk)
    psql("DELETE FROM side WHERE id % 2 = 0; DELETE FROM bulk WHERE id > 500000", bulk)
    folder = tmp_path / "scratch"
    folder.mkdir(mode=0o700)
    settings.PGCLONE_CELERY_QUEUE = queue = own_queue("parallel")
    env = {"PGCLONE_TEST_TEMP_DIR": str(folder), "PGCLONE_TEST_RESTORE_JOBS": "2"}
    if encrypted:
        env["PGCLONE_AGE_IDENTITY"] = str(KEY)
    worker = start_worker(
        test_database_name, tmp_path / "worker.log", moto=moto_server, queue=queue,
        pool="solo", prefix=tmpfs_prefix(folder, MIB + schema + 64 * 1024), env=env,
    )  # fmt: skip
    try:
        job = api.restore(made.dump_key, database="target", pre_swap_hooks=[])
        seen = Sampled(job, worker.process.pid, folder)
        job = seen.until_finished()
    finally:
        stop_worker(worker)

    assert job.status == Job.Status.SUCCEEDED, f"{job.error}\n{worker.output()[-3000:]}"
    message = job.steps.get(name="restore_temp").message
    assert "COPY of the tables in 2 sessions (" in message and "pg_restore --jobs=2." in message
    assert seen.one_table >= 2  # the big table, loaded by both sessions at once
    assert 0 < seen.peak < MIB + schema  # the post-data archive (and its list), no rows
    assert contents(bulk) == before
    assert list(folder.iterdir()) == []  # nothing outside the namespace, ever
    assert pgclone_databases() == []


def job_sessions(job: Job) -> int:
    return int(
        psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgclone:{job.pk}'")
    )


def test_a_worker_killed_in_the_middle_of_the_parallel_load_leaves_nothing(
    bulk, local_location, tmp_path, settings, test_database_name, moto_server
):
    made = api.dump(database="target", inline=True)
    assert made.status == Job.Status.SUCCEEDED, made.error
    before = contents(bulk)
    folder = tmp_path / "scratch"
    folder.mkdir(mode=0o700)
    settings.PGCLONE_TEMP_DIR = str(folder)  # where this process's sweep looks, as the worker
    settings.PGCLONE_CELERY_QUEUE = queue = own_queue("killed")
    worker = start_worker(
        test_database_name, tmp_path / "worker.log", moto=moto_server, queue=queue,
        pool="solo", env={"PGCLONE_TEST_TEMP_DIR": str(folder), "PGCLONE_TEST_RESTORE_JOBS": "2"},
    )  # fmt: skip
    try:
        job = api.restore(made.dump_key, database="target", pre_swap_hooks=[])
        temp = databases.temp_name(job.pk)
        loading = (
            "SELECT count(*) FROM pg_stat_progress_copy WHERE datname = "
            f"'{temp}' AND command = 'COPY FROM' AND bytes_processed > 0"
        )
        wait_for(lambda: int(psql(loading)) > 0, timeout=120, what="the parallel load")
        assert [path.name[:16] for path in folder.iterdir()] == ["pgclone-restore-"]

        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
    finally:
        stop_worker(worker)

    def swept() -> bool:
        api.sweep()
        job.refresh_from_db()
        return job.is_finished

    wait_for(swept, timeout=60, what="the sweep to end the lost job")
    assert job.status == Job.Status.FAILED and "during step restore_temp" in job.error
    wait_for(lambda: job_sessions(job) == 0, what="the job's sessions to end")
    assert pgclone_databases() == [] and list(folder.iterdir()) == []
    assert contents(bulk) == before


def pg_dump(database: str, *args: str) -> bytes:
    argv = ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-Fc", "-d", database, *args]
    return subprocess.run(argv, stdout=subprocess.PIPE, check=True).stdout


def test_a_tables_members_load_in_any_session_and_a_bad_row_stops_them_all(tmp_path):
    """A container assembled from real pg_dump archives, a table's rows in three
    members between another table's and the rest's: every row in, the foreign
    key built after them; then a member with a row of the wrong type fails the
    restore with the server's words, and no session is left."""
    from pgclone.archive import containers, parallel_restore
    from pgclone.pg import postgres

    tables = [
        {"schema": "public", "name": name, "columns": columns, "member": f"data/000{i}"}
        for i, (name, columns) in enumerate([("planned", ["id", "label"]), ("other", ["id"])])
    ]
    with scratch_database() as source, scratch_database() as into:
        psql(
            "CREATE TABLE planned (id int PRIMARY KEY, label text);"
            "CREATE TABLE other (id int PRIMARY KEY REFERENCES planned);"
            "CREATE SEQUENCE counter; SELECT setval('counter', 41)",
            source,
        )
        rest = pg_dump(source, "--section=data", "-T", "planned", "-T", "other")

        def container(second: bytes) -> io.BytesIO:
            out = io.BytesIO()
            tar = containers.TarWriter(out.write)
            tar.json(containers.PLAN, {"format": containers.FORMAT, "tables": tables})
            for name, data in (
                ("pre-data/000000", pg_dump(source, "--section=pre-data")),
                ("data/0000/000000", b"1\tone\n2\ttwo\n"),
                ("rest/000000", rest),
                ("data/0001/000000", b"1\n3\n"),
                ("data/0000/000001", second),
                ("rest/end", b""),
                ("data/0000/000002", b"4\tfour\n"),
                ("data/0000/end", b""),
                ("data/0001/end", b""),
                ("post-data/000000", pg_dump(source, "--section=post-data")),
            ):
                tar.member(name, data)
            tar.close()
            return io.BytesIO(zstandard.ZstdCompressor().compress(out.getvalue()))

        checks = {"expected_sha256": None, "on_progress": lambda _: None}
        conn = postgres.conn_info().with_name(into)
        work = tmp_path / "work"
        work.mkdir(mode=0o700)

        restore = parallel_restore.ParallelRestore(conn, 2, work)
        assert restore.run(container(b"3\tthree\n"), checks) == 6
        assert restore.loaded() == len(b"1\tone\n2\ttwo\n1\n3\n3\tthree\n4\tfour\n")
        assert psql("SELECT string_agg(label, ',' ORDER BY id) FROM planned", into) == (
            "one,two,three,four"
        )
        assert psql("SELECT last_value FROM counter", into) == "41"
        assert psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", into) == "1"
        files = sorted((path.name, path.stat().st_mode & 0o777) for path in work.iterdir())
        # The archives of SQL, kept till they are checked; never a table's rows.
        assert files == [("post-data", 0o600), ("pre-data", 0o600), ("rest", 0o600)]

        psql("DROP TABLE other, planned; DROP SEQUENCE counter", into)
        restore = parallel_restore.ParallelRestore(conn, 2, work)
        with pytest.raises(Exception, match="invalid input syntax for type integer"):
            restore.run(container(b"three\tthree\n"), checks)
        assert psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{into}'") == "0"
        assert psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", into) == "0"


# Every foreign key of the test database is ALTER TABLE … ADD … FOREIGN KEY;
# this event trigger logs each one's start and end, and holds it at its start
# for a moment, so that two pg_restore ran at once would overlap in the log.
FOREIGN_KEY_LOG = """
CREATE TABLE public.fk_log (pid int, at timestamptz, event text);
CREATE FUNCTION public.fk_log() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_query() LIKE '%FOREIGN KEY%' THEN
    INSERT INTO public.fk_log VALUES (pg_backend_pid(), clock_timestamp(), TG_EVENT);
    IF TG_EVENT = 'ddl_command_start' THEN PERFORM pg_sleep(0.3); END IF;
  END IF;
END $$;
CREATE EVENT TRIGGER fk_log_start ON ddl_command_start EXECUTE FUNCTION public.fk_log();
CREATE EVENT TRIGGER fk_log_end ON ddl_command_end EXECUTE FUNCTION public.fk_log();
"""


def foreign_keys_at_once(database: str) -> int:
    """How many times a foreign key started while another was being built."""
    events = psql("SELECT event FROM fk_log ORDER BY at", database).split()
    running = overlaps = 0
    for event in events:
        if event == "ddl_command_start":
            overlaps += running > 0
            running += 1
        else:
            running -= 1
    assert running == 0 and len(events) == 2 * 3, events
    return overlaps


@pytest.mark.parametrize(
    "post_data",
    [["--section=pre-data", "--section=post-data"], ["--section=post-data"]],
    ids=["as-pgclone-writes-it", "made-before-it-listed-the-tables"],
)
def test_foreign_keys_that_lock_the_same_tables_are_never_built_at_once(tmp_path, post_data):
    """Three foreign keys lock ``parent`` and ``child`` (in turn): built by
    four pg_restore jobs at once, two could each hold one table and wait for
    the other (a CI run failed so, "deadlock detected"). pg_restore keeps them
    apart only if the post-data archive lists the tables they lock; an archive
    that does not (older dumps) is restored with one job."""
    from pgclone.archive import containers, parallel_restore
    from pgclone.pg import postgres

    with scratch_database() as source, scratch_database() as into:
        psql(
            "CREATE TABLE parent (id int PRIMARY KEY, child_id int);"
            "CREATE TABLE child (id int PRIMARY KEY, a int REFERENCES parent,"
            " b int REFERENCES parent);"
            "ALTER TABLE parent ADD FOREIGN KEY (child_id) REFERENCES child;"
            "INSERT INTO child VALUES (1, NULL, NULL); INSERT INTO parent VALUES (1, 1);"
            "UPDATE child SET a = 1, b = 1",
            source,
        )
        psql(FOREIGN_KEY_LOG, into)
        out = io.BytesIO()
        tar = containers.TarWriter(out.write)
        tar.json(containers.PLAN, {"format": containers.FORMAT, "tables": []})
        tar.member("pre-data/000000", pg_dump(source, "--section=pre-data"))
        tar.member("rest/000000", pg_dump(source, "--section=data"))
        tar.member("rest/end", b"")
        tar.member("post-data/000000", pg_dump(source, *post_data))
        tar.close()
        work = tmp_path / "work"
        work.mkdir(mode=0o700)
        conn = postgres.conn_info().with_name(into)

        restore = parallel_restore.ParallelRestore(conn, 4, work)
        restore.run(
            io.BytesIO(zstandard.ZstdCompressor().compress(out.getvalue())),
            {"expected_sha256": None, "on_progress": lambda _: None},
        )

        assert psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", into) == "3"
        assert psql("SELECT a + b + child_id FROM child JOIN parent USING (id)", into) == "3"
        assert foreign_keys_at_once(into) == 0


def test_a_dumps_post_data_archive_lists_the_tables_its_foreign_keys_lock(local_location):
    """What the test above needs of a dump pgclone writes: its post-data
    archive lists the tables (pre-data entries, which a restore leaves out)."""
    key = make_dump("listed", local_location)
    raw = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO((Path(local_location) / key).read_bytes())
    )
    with tarfile.open(fileobj=raw, mode="r|") as tar:
        archive = b"".join(
            tar.extractfile(member).read() for member in tar if member.name.startswith("post-data/")
        )
    listed = subprocess.run(
        ["pg_restore", "--list"], input=archive, stdout=subprocess.PIPE, check=True
    ).stdout.decode()
    assert " TABLE public testapp_book " in listed
    assert " FK CONSTRAINT public testapp_book " in listed


# Damaged members --------------------------------------------------------------------


def members(raw: bytes) -> list[tuple[str, int, int]]:
    """Each member of a tar stream: its name, where its bytes start, their size."""
    found, offset = [], 0
    while raw[offset : offset + 512].strip(b"\0"):
        info = tarfile.TarInfo.frombuf(raw[offset : offset + 512], "utf-8", "surrogateescape")
        found.append((info.name, offset + 512, info.size))
        offset += 512 + -(-info.size // 512) * 512
    return found


def recompress(stored: bytes, change: Any) -> bytes:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    return zstandard.ZstdCompressor(write_checksum=True).compress(change(raw))


def cut_in_a_data_member(raw: bytes) -> bytes:
    """The tar stream cut half-way through the bytes of its first table's first member."""
    _name, start, size = next(m for m in members(raw) if m[0].startswith("data/") and m[2] > 1)
    return raw[: start + size // 2]


@pytest.fixture
def scratch(tmp_path: Path, settings: Any) -> Path:
    folder = tmp_path / "scratch"
    folder.mkdir(mode=0o700)
    settings.PGCLONE_TEMP_DIR = str(folder)
    settings.PGCLONE_RESTORE_JOBS = 2
    return folder


def assert_left_nothing(job: Job, target: str, scratch: Path) -> None:
    assert job.status == Job.Status.FAILED
    assert job.steps.get(name="swap").status == JobStep.Status.SKIPPED
    assert authors(target) == ["target-only"]  # the live database, unchanged
    assert pgclone_databases() == [] and job_sessions(job) == 0
    assert list(scratch.iterdir()) == []


def test_a_truncated_member_fails_the_restore_with_nothing_left(local_location, target, scratch):
    """The manifest is rewritten to match (size, SHA-256): only the stream tells."""
    key = make_dump("cut-short", local_location)
    path = Path(local_location) / key
    replace_dump_bytes(local_location, key, recompress(path.read_bytes(), cut_in_a_data_member))

    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])

    assert "The dump is truncated" in job.error
    assert job.steps.get(name="restore_temp").status == JobStep.Status.FAILED
    assert_left_nothing(job, target, scratch)


def test_a_member_whose_checksum_is_wrong_fails_before_the_swap(
    s3_location, moto_server, target, scratch
):
    """A row changed in a member read from S3: it loads, then the dump's SHA-256,
    checked once it is all read, fails the restore before the swap."""
    key = make_dump("checksum-canary", s3_location)
    bucket, prefix = s3_location.removeprefix("s3://").split("/", 1)
    client = s3_client(moto_server)
    name = f"{prefix}/{key}"
    stored = client.get_object(Bucket=bucket, Key=name)["Body"].read()

    def change(raw: bytes) -> bytes:
        assert b"checksum-canary\n" in raw  # in testapp_author's and testapp_secret's
        return raw.replace(b"checksum-canary\n", b"checksum-canarx\n")

    changed = recompress(stored, change)
    client.put_object(Bucket=bucket, Key=name, Body=changed)
    manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{name}.json")["Body"].read())
    client.put_object(
        Bucket=bucket, Key=f"{name}.json", Body=json.dumps({**manifest, "size": len(changed)})
    )

    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])

    assert "The dump is damaged: its SHA-256 is" in job.error
    assert job.steps.get(name="restore_temp").status == JobStep.Status.FAILED
    assert_left_nothing(job, target, scratch)


# A storage writer's SQL ----------------------------------------------------------------

PADDING = "p" * 120  # a comment on a table, in the pre-data: SQL of the length to replace


@pytest.fixture
def commented(test_database_name: str) -> Iterator[None]:
    psql(f"COMMENT ON TABLE testapp_author IS '{PADDING}'", test_database_name)
    yield
    psql("COMMENT ON TABLE testapp_author IS NULL", test_database_name)


@pytest.fixture
def planted() -> Iterator[str]:
    """The name of the database the planted SQL would create; dropped if it did."""
    name = f"pgclone_planted_{os.urandom(4).hex()}"
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}"')


def plant(stored: bytes, database: str) -> bytes:
    """The stored dump with the comment's statement in its pre-data replaced by
    ``CREATE DATABASE``, at the same length (pg_restore runs each entry's SQL as
    it finds it), recompressed and padded with a zstd skippable frame to the
    size the manifest records: a change only the dump's checksums can reveal."""

    def change(raw: bytes) -> bytes:
        comment = f"COMMENT ON TABLE public.testapp_author IS '{PADDING}';".encode()
        # In the pre-data, and in the post-data's copy of its entries (never run).
        assert raw.count(comment) == 2
        statement = f"CREATE DATABASE {database} /*".encode()
        statement += b"x" * (len(comment) - len(statement) - 3) + b"*/;"
        return raw.replace(comment, statement, 1)  # the pre-data's: it comes first

    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    changed = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(change(raw))
    room = len(stored) - len(changed) - 8
    assert room >= 0
    return changed + b"\x50\x2a\x4d\x18" + room.to_bytes(4, "little") + bytes(room)


def replace_object(moto_server: str, location: str, key: str, change: Any) -> dict[str, Any]:
    """Put ``change(the stored dump)`` in its place in S3; its manifest, as stored."""
    bucket, prefix = location.removeprefix("s3://").split("/", 1)
    client = s3_client(moto_server)
    stored = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
    changed = change(stored)
    assert len(changed) == len(stored)
    client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=changed)
    return json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/{key}.json")["Body"].read())


def database_exists(name: str) -> bool:
    return psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"


def test_sql_a_storage_writer_puts_in_the_pre_data_never_runs(
    s3_location, moto_server, target, scratch, settings, commented, planted
):
    """Someone who can write to the bucket, without the signing key, changes a
    dump's pre-data so that restoring it creates a database. The dump's SHA-256
    is known only once it is all read; the pre-data's, which the signed
    manifest names, is checked before pg_restore runs any of it."""
    settings.PGCLONE_SIGNING_KEY = "pre-data test key"
    key = make_dump("planted", s3_location)

    manifest = replace_object(moto_server, s3_location, key, lambda data: plant(data, planted))
    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])

    assert manifest["signature"] and manifest["pre_data_sha256"]
    assert not database_exists(planted)
    assert "The dump is damaged: its pre-data archive's SHA-256 is" in job.error
    assert "Nothing of it was run" in job.error
    assert_left_nothing(job, target, scratch)


def test_a_dump_whose_manifest_names_no_pre_data_checksum_is_read_whole_first(
    s3_location, moto_server, target, scratch, settings, commented, planted
):
    """A dump made before manifests named their pre-data's SHA-256 (the field
    left out, the manifest signed again as that pgclone signed it): from S3 it
    is read whole and checked in fetch, before anything is created or run."""
    from pgclone.storage import signing

    settings.PGCLONE_SIGNING_KEY = "pre-data test key"
    key = make_dump("older", s3_location)
    bucket, prefix = s3_location.removeprefix("s3://").split("/", 1)
    client = s3_client(moto_server)
    name = f"{prefix}/{key}.json"
    manifest = json.loads(client.get_object(Bucket=bucket, Key=name)["Body"].read())
    older = {k: v for k, v in manifest.items() if k not in ("pre_data_sha256", "signature")}
    client.put_object(Bucket=bucket, Key=name, Body=json.dumps(signing.sign(older)))

    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])  # untouched
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert "(read whole before anything of it runs)" in job.steps.get(name="fetch").message
    assert authors(target) == ["older"]
    psql("TRUNCATE testapp_author CASCADE", target)
    psql("INSERT INTO testapp_author (name) VALUES ('target-only')", target)

    replace_object(moto_server, s3_location, key, lambda data: plant(data, planted))
    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])

    assert "The dump is damaged" in job.error and "SHA-256" in job.error
    assert job.steps.get(name="fetch").status == JobStep.Status.FAILED
    assert not database_exists(planted)
    assert_left_nothing(job, target, scratch)


def test_a_row_that_does_not_load_fails_the_restore_with_nothing_left(
    local_location, target, scratch
):
    """A member whose rows don't load (an id changed to what its type refuses,
    the checksums rewritten to match): its session's error fails the restore,
    the other sessions and the reading are stopped."""
    key = make_dump("bad-row", local_location)
    path = Path(local_location) / key

    def change(raw: bytes) -> bytes:
        _, start, _size = next(m for m in members(raw) if b"\tbad-row\n" in raw[m[1] : m[1] + m[2]])
        value = raw.index(b"\tbad-row\n", start)
        row_start = raw.rfind(b"\n", start, value) + 1 or start
        return raw[:row_start] + b"x" * (value - row_start) + raw[value:]

    replace_dump_bytes(local_location, key, recompress(path.read_bytes(), change))

    job = api.restore(key, database="target", inline=True, pre_swap_hooks=[])

    assert "invalid input syntax" in job.error
    assert job.steps.get(name="restore_temp").status == JobStep.Status.FAILED
    assert_left_nothing(job, target, scratch)


@pytest.fixture(autouse=True)
def _no_scratch_left(tmp_path: Path) -> Any:
    yield
    shutil.rmtree(tmp_path / "scratch", ignore_errors=True)
