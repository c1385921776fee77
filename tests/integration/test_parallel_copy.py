"""A big scrubbed table copied by several sessions at once (forced here on a small
one), and a subset's tables copied by psql sessions as soon as their kept rows are
final: the restored tables hold every row once, scrubbed; a failing session fails
the dump and leaves no session behind."""

from __future__ import annotations

import io
import itertools
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from pgclone import api
from pgclone.archive import parallel_copy, planned_restore
from pgclone.models import Job
from pgclone.pg import postgres, table_counts
from pgclone.pg.driver import sql
from pgclone.sharing import planned_dump, plans, subset
from tests.helpers import deciding, psql, wait_for
from tests.integration.test_subset import SAFE, shop  # noqa: F401 (fixture)
from tests.testapp.models import Author, Book, Tag

pytestmark = pytest.mark.django_db(transaction=True)

JOBS = 3
SCRUBBED = ("name", "email", "notes", "profile::text", "ip::text")


@pytest.fixture
def parallel(settings, monkeypatch) -> list[tuple]:
    """Every scrubbed table copied in JOBS sessions; the ranges copied, as they start."""
    settings.PGCLONE_DUMP_CONFIGS = {"scrubbed": deciding({"scrub": SAFE["scrub"]})}
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"pre_swap_hooks": []}}
    settings.PGCLONE_DUMP_JOBS = JOBS
    monkeypatch.setattr(parallel_copy, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel_copy, "PSQL_BYTES", 0)
    copied = []
    statement = parallel_copy.range_copy_statement

    def recorded(table, first, end):
        copied.append((table.name, first, end))
        return statement(table, first, end)

    monkeypatch.setattr(parallel_copy, "range_copy_statement", recorded)
    return copied


def column(table: str, name: str, database: str) -> list[str]:
    return psql(f"SELECT string_agg(coalesce({name}, '-'), '|' ORDER BY id) FROM {table}",
                database).split("|")  # fmt: skip


@pytest.mark.matrix  # COPY out differs by driver
@pytest.mark.parametrize("restore_jobs", [1, 2], ids=["one-session", "two-sessions"])
def test_a_table_copied_in_ranges_restores_every_row_once_scrubbed(
    shop,  # noqa: F811 (the fixture imported above)
    parallel,
    settings,
    local_location,
    target,
    test_database_name,
    restore_jobs,
):
    settings.PGCLONE_RESTORE_JOBS = restore_jobs
    blocks = psql("SELECT pg_relation_size('testapp_customer') / 8192", test_database_name)
    assert int(blocks) >= JOBS  # else fewer ranges than sessions

    dumped = api.dump(config="scrubbed", inline=True)
    assert dumped.status == Job.Status.SUCCEEDED, dumped.error
    restored = api.restore(dumped.dump_key, database="target", inline=True)
    assert restored.status == Job.Status.SUCCEEDED, restored.error

    assert [end for name, _, end in parallel if name == "testapp_customer"].count(None) == 1
    assert len([name for name, _, _ in parallel if name == "testapp_customer"]) == JOBS
    for table in ("testapp_customer", "testapp_address"):
        assert column(table, "id::text", target) == column(table, "id::text", test_database_name)
    for table, name in [("testapp_address", "street")] + [
        ("testapp_customer", name) for name in SCRUBBED
    ]:
        source = column(table, name, test_database_name)
        scrubbed = column(table, name, target)
        assert len(scrubbed) == len(source)
        assert all(a != b for a, b in zip(source, scrubbed, strict=True) if a != "-"), name
    assert psql("SELECT count(*) FROM testapp_customer WHERE phone IS NOT NULL", target) == "0"


def test_a_failing_session_fails_the_dump_and_stops_the_others(
    shop,  # noqa: F811 (the fixture imported above)
    parallel,
    monkeypatch,
    local_location,
    test_database_name,
):
    """One session fails mid-way (a fault no config can make: the plan's checks
    would refuse it), another would take a minute: it is cancelled."""
    statement = parallel_copy.range_copy_statement

    def faulty(table, first, end):
        if first == 0:  # fails after a thousand rows
            return sql.SQL("COPY (SELECT 1 / (x - 1000) FROM generate_series(1, 2000) x) TO STDOUT")
        if end is None:
            return sql.SQL("COPY (SELECT pg_sleep(60)) TO STDOUT")
        return statement(table, first, end)

    monkeypatch.setattr(parallel_copy, "range_copy_statement", faulty)

    fails_fast_leaving_no_session("scrubbed", test_database_name)


def test_a_failing_main_session_copy_fails_the_dump_and_stops_the_psql_sessions(
    shop,  # noqa: F811 (the fixture imported above)
    parallel,
    monkeypatch,
    local_location,
    test_database_name,
):
    """The main session's COPY (of the addresses here) runs at the same time as
    the psql sessions' (the customers') and the rest's pg_dump: when it fails,
    the others are stopped, and the dump fails with its error."""
    ranges_of, statement = parallel_copy.ranges_of, parallel_copy.range_copy_statement

    def in_main_session(cursor, table, jobs):
        return [] if table.name == "testapp_address" else ranges_of(cursor, table, jobs)

    def slow(table, first, end):
        if end is None:
            return sql.SQL("COPY (SELECT pg_sleep(60)) TO STDOUT")
        return statement(table, first, end)

    def faulty(table):
        return sql.SQL("COPY (SELECT 1 / (x - 1000) FROM generate_series(1, 2000) x) TO STDOUT")

    monkeypatch.setattr(parallel_copy, "ranges_of", in_main_session)
    monkeypatch.setattr(parallel_copy, "range_copy_statement", slow)
    monkeypatch.setattr(subset.PlannedTable, "copy_statement", faulty)

    fails_fast_leaving_no_session("scrubbed", test_database_name, programs=("pg_dump",))


def fails_fast_leaving_no_session(
    config: str, database: str, programs: tuple[str, ...] = (), message: str = "division by zero"
) -> None:
    """A dump of ``config`` fails with the faulty session's error within 30 s, lists
    nothing, and soon no COPY (nor any of ``programs``) runs on ``database``."""
    started = time.monotonic()

    job = api.dump(config=config, inline=True)

    assert job.status == Job.Status.FAILED and message in job.error, job.error
    assert time.monotonic() - started < 30
    assert api.ls() == []
    no_session_left(database, programs)


def no_session_left(database: str, programs: tuple[str, ...]) -> None:
    """Soon no COPY (nor any of ``programs``) runs on ``database``."""
    running = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() "
        "AND (query ILIKE 'COPY%' OR application_name = ANY(string_to_array({}, ',')))"
    ).format("'" + ",".join(programs) + "'")
    wait_for(
        lambda: psql(running, database) == "0",
        timeout=5,
        what=f"the dump's COPY sessions and {', '.join(programs) or 'nothing else'} to end",
    )


# A subset's tables copied by other sessions while the main one goes on -------------

LIBRARY = {"subset": {"testapp.Author": {"percent": 50}}}


@pytest.fixture
def library(test_database_name: str) -> Iterator[str]:
    """20 authors of 5 books each, tags on the books, and a table Django doesn't
    know whose rows may name an author (or none): with a half of the authors as
    the subset's root, the authors are final at once (their notes too, a leaf),
    the books after one statement, their tags after two."""
    authors = Author.objects.bulk_create(Author(name=f"author {i}") for i in range(20))
    tags = Tag.objects.bulk_create(Tag(name=f"tag {i}") for i in range(5))
    books = Book.objects.bulk_create(
        Book(author=authors[i % 20], title=f"book {i}") for i in range(100)
    )
    Book.tags.through.objects.bulk_create(
        Book.tags.through(book=book, tag=tags[(i + k) % 5])
        for i, book in enumerate(books)
        for k in range(2)
    )
    psql(
        "CREATE TABLE pgclone_raw_note (id int PRIMARY KEY, "
        "author_id bigint REFERENCES testapp_author (id), body text);"
        "INSERT INTO pgclone_raw_note SELECT i, CASE WHEN i % 3 > 0 THEN a.id END, 'n' || i "
        "FROM generate_series(1, 60) i JOIN testapp_author a ON a.id % 20 = i % 20;",
        test_database_name,
    )
    yield test_database_name
    psql("DROP TABLE pgclone_raw_note", test_database_name)


@pytest.fixture
def kept_sessions(settings, monkeypatch) -> list[str]:
    """The tables psql sessions copy from the kept rows, as they start (three at
    once: the authors, their notes and the books get one each)."""
    settings.PGCLONE_DUMP_CONFIGS = {"library": LIBRARY}
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"pre_swap_hooks": []}}
    settings.PGCLONE_DUMP_JOBS = 3
    started = []
    statement = subset.PlannedTable.copy_statement

    def recorded(table):
        if threading.current_thread().name == "pgclone-copy":
            started.append(table.name)  # rendered by the main session for a psql session
        return statement(table)

    monkeypatch.setattr(subset.PlannedTable, "copy_statement", recorded)
    monkeypatch.setattr(
        parallel_copy.Helper, "__init__", _named(parallel_copy.Helper.__init__, started)
    )
    return started


def _named(init, started):
    def wrapped(self, *args, **kwargs):
        started.append(f"session {kwargs['name']}")
        init(self, *args, **kwargs)

    return wrapped


@pytest.mark.matrix  # COPY out of the main session differs by driver
def test_subset_tables_are_copied_by_other_sessions_as_their_rows_are_final(
    target, library, kept_sessions, local_location, test_database_name
):
    dumped = api.dump(config="library", inline=True)
    assert dumped.status == Job.Status.SUCCEEDED, dumped.error
    restored = api.restore(dumped.dump_key, database="target", inline=True)
    assert restored.status == Job.Status.SUCCEEDED, restored.error

    by_sessions = [
        name for previous, name in itertools.pairwise(kept_sessions)
        if previous.startswith("session ")
    ]  # fmt: skip
    assert {"testapp_author", "testapp_book", "pgclone_raw_note"} <= set(by_sessions)
    rows = dumped.result["plan"]["rows"]
    for table in ("testapp_author", "testapp_book", "testapp_book_tags", "pgclone_raw_note"):
        assert int(psql(f"SELECT count(*) FROM {table}", target)) == rows[f"public.{table}"]
    assert rows["public.testapp_author"] == 10
    assert rows["public.testapp_book"] == 50 and rows["public.testapp_book_tags"] == 100
    # the notes of the kept authors and those of none, as they are in the source
    authors = psql("SELECT string_agg(id::text, ',') FROM testapp_author", target)
    notes = "SELECT string_agg(id || body, ',' ORDER BY id) FROM pgclone_raw_note"
    kept = f"{notes} WHERE author_id IS NULL OR author_id IN ({authors})"
    assert psql(notes, target) == psql(kept, test_database_name)
    assert 20 < rows["public.pgclone_raw_note"] < 60


def test_a_failing_kept_rows_session_fails_the_dump_and_stops_the_others(
    library, kept_sessions, monkeypatch, local_location, test_database_name
):
    """The books' session fails mid-way while the authors' would take a minute: the
    dump fails with the server's error and no session is left behind."""
    statement = subset.PlannedTable.copy_statement

    def faulty(table):
        if table.name == "testapp_book":
            return sql.SQL("COPY (SELECT 1 / (x - 1000) FROM generate_series(1, 2000) x) TO STDOUT")
        if table.name == "testapp_author":
            return sql.SQL("COPY (SELECT pg_sleep(60)) TO STDOUT")
        return statement(table)

    monkeypatch.setattr(subset.PlannedTable, "copy_statement", faulty)

    fails_fast_leaving_no_session("library", test_database_name, programs=("pg_dump", "psql"))


def test_a_failing_pg_dump_stops_a_subset_dump_at_once(
    library, kept_sessions, monkeypatch, local_location, test_database_name
):
    """pg_dump of the rest's data fails while the authors' session would take a
    minute: the dump fails with pg_dump's error at once, not once all is copied."""
    pg_dump_argv = postgres.pg_dump_argv
    statement = subset.PlannedTable.copy_statement

    def faulty_rest(conn, **kwargs):
        argv = pg_dump_argv(conn, **kwargs)
        if kwargs["sections"] == ["data"]:
            return [*argv[:1], "--no-such-option", *argv[1:]]
        return argv

    def slow(table):
        if table.name == "testapp_author":
            return sql.SQL("COPY (SELECT pg_sleep(60)) TO STDOUT")
        return statement(table)

    monkeypatch.setattr(postgres, "pg_dump_argv", faulty_rest)
    monkeypatch.setattr(subset.PlannedTable, "copy_statement", slow)

    fails_fast_leaving_no_session(
        "library", test_database_name, programs=("pg_dump", "psql"), message="no-such-option"
    )


def test_a_session_outlasting_the_join_timeout_still_hands_over_every_row(
    target, library, kept_sessions, monkeypatch, local_location
):
    """The main session waits for its sessions' last rows however long they take
    (a big table's): a timeout there would end the container without them."""
    monkeypatch.setattr(parallel_copy, "JOIN_TIMEOUT", 0.05)
    read_members = parallel_copy.read_members

    def slow(stdout, put):
        time.sleep(1)
        return read_members(stdout, put)

    monkeypatch.setattr(parallel_copy, "read_members", slow)

    dumped = api.dump(config="library", inline=True)
    assert dumped.status == Job.Status.SUCCEEDED, dumped.error
    restored = api.restore(dumped.dump_key, database="target", inline=True)
    assert restored.status == Job.Status.SUCCEEDED, restored.error

    assert any(name.startswith("session ") for name in kept_sessions)
    assert psql("SELECT count(*) FROM testapp_author", target) == "10"
    assert psql("SELECT count(*) FROM testapp_book", target) == "50"


# Other sessions' locks: the dump neither loses rows to them nor hangs on them ----


def before_the_notes_copy(monkeypatch, interfere) -> None:
    """Run ``interfere(database)`` in the main session's thread just before it hands
    the notes (a leaf: only its own psql session reads it) to that session."""
    statement = subset.PlannedTable.copy_statement

    def wrapped(table):
        if table.name == "pgclone_raw_note" and threading.current_thread().name == "pgclone-copy":
            interfere()
        return statement(table)

    monkeypatch.setattr(subset.PlannedTable, "copy_statement", wrapped)


def test_a_table_is_not_emptied_under_a_subset_dump_that_has_not_copied_it_yet(
    target, library, kept_sessions, monkeypatch, local_location, test_database_name
):
    """TRUNCATE (or a rewriting ALTER TABLE) is not MVCC-safe: once it commits,
    the dump's snapshot sees the table empty. pg_dump's own locks go with it; the
    dump's main session holds one on every table it writes until the end."""
    monkeypatch.setattr(table_counts, "EXACT_BELOW", 0)  # as tables from 32 MB: not counted
    refused = []

    def truncate():
        wait_for(
            lambda: psql(
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'pg_dump'",
                test_database_name,
            ) == "t",
            timeout=30,
            what="the dump's pg_dumps to end",
        )  # fmt: skip
        try:
            psql("SET lock_timeout = '1s'; TRUNCATE pgclone_raw_note", test_database_name)
        except subprocess.CalledProcessError as exc:
            refused.append(exc.stderr)

    before_the_notes_copy(monkeypatch, truncate)

    dumped = api.dump(config="library", inline=True)
    assert dumped.status == Job.Status.SUCCEEDED, dumped.error
    assert refused and "lock timeout" in refused[0]
    assert psql("SELECT count(*) FROM pgclone_raw_note", test_database_name) == "60"
    restored = api.restore(dumped.dump_key, database="target", inline=True)
    assert restored.status == Job.Status.SUCCEEDED, restored.error
    assert 20 < int(psql("SELECT count(*) FROM pgclone_raw_note", target)) < 60


def test_a_migration_during_a_subset_dump_makes_it_give_way_not_hang(
    library, kept_sessions, monkeypatch, local_location, test_database_name
):
    """An ALTER TABLE waits for the dump's lock on the notes, and the notes' session
    would wait behind it: a wait nobody would end (the dump waits for that session).
    The session gives way at once: the dump fails, naming why, and the ALTER runs.
    (On a loaded machine the pg_dumps may not have locked the notes yet either:
    they wait behind the ALTER too, and give way, or are ended with the dump.)"""
    thread, altered = migration("pgclone_raw_note", test_database_name)

    def start_migration():
        thread.start()
        wait_for_the_migration("pgclone_raw_note", test_database_name)

    before_the_notes_copy(monkeypatch, start_migration)
    started = time.monotonic()

    job = api.dump(config="library", inline=True)

    assert job.status == Job.Status.FAILED, "the dump went on behind the ALTER TABLE"
    assert "timeout" in job.error and "gave way" in job.error, job.error
    assert time.monotonic() - started < 30
    thread.join(timeout=30)
    assert altered == ["done"]
    assert api.ls() == []
    no_session_left(test_database_name, ("psql",))


def migration(table: str, database: str) -> tuple[threading.Thread, list[str]]:
    """An ALTER TABLE of ``table`` in a thread (started by the caller); what it
    met: "done", or its error. Its lock_timeout only bounds a test of a hanging dump."""
    altered: list[str] = []

    def alter() -> None:
        try:
            psql(f"SET lock_timeout = '40s'; ALTER TABLE {table} ADD COLUMN x int", database)
            altered.append("done")
        except subprocess.CalledProcessError as exc:
            altered.append(exc.stderr)

    return threading.Thread(target=alter, daemon=True), altered


def wait_for_the_migration(table: str, database: str) -> None:
    waiting = (
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock' "
        f"AND relation = '{table}'::regclass"
    )
    wait_for(lambda: psql(waiting, database) == "1", timeout=10,
             what="the ALTER TABLE to wait for the dump")  # fmt: skip


def before_the_pg_dumps(monkeypatch, interfere) -> None:
    """Run ``interfere()`` once the main session locked the planned tables, just
    before the pg_dumps start (and take their own locks: as late as a loaded
    machine may make them)."""
    pg_dumps = planned_dump.pg_dumps

    def wrapped(*args, **kwargs):
        interfere()
        return pg_dumps(*args, **kwargs)

    monkeypatch.setattr(planned_dump, "pg_dumps", wrapped)


def test_a_failing_session_ends_the_pg_dumps_waiting_behind_a_migration(
    library, kept_sessions, monkeypatch, local_location, test_database_name
):
    """The ALTER TABLE waits for the main session's lock on the notes, and the
    pg_dumps' locks, taken after it (as late as a loaded machine makes them),
    wait behind the ALTER. The notes' session gives way; the dump then ends its
    pg_dumps rather than wait for their output, however long they would wait
    for their locks: it fails at once with the session's error, and the ALTER runs."""
    monkeypatch.setattr(planned_dump, "PG_DUMP_LOCK_WAIT_SECONDS", 60)
    thread, altered = migration("pgclone_raw_note", test_database_name)

    def start_migration() -> None:
        thread.start()
        wait_for_the_migration("pgclone_raw_note", test_database_name)

    before_the_pg_dumps(monkeypatch, start_migration)
    started = time.monotonic()

    job = api.dump(config="library", inline=True)

    assert job.status == Job.Status.FAILED, "the dump went on behind the ALTER TABLE"
    assert "due to lock timeout" in job.error and "gave way" in job.error, job.error
    assert time.monotonic() - started < 30
    thread.join(timeout=30)
    assert altered == ["done"]
    assert api.ls() == []
    no_session_left(test_database_name, ("pg_dump", "psql"))


def test_a_planned_dump_s_pg_dumps_give_way_to_a_migration_queued_before_them(
    shop,  # noqa: F811 (the fixture imported above)
    settings,
    monkeypatch,
    local_location,
    test_database_name,
):
    """A scrubbed table the main session copies itself: no session of the dump
    but the pg_dumps waits behind the ALTER TABLE, which waits for the main
    session, which waits for the pg_dumps' output. They give way within
    seconds: the dump fails, naming why, and the ALTER runs."""
    settings.PGCLONE_DUMP_CONFIGS = {"scrubbed": deciding({"scrub": SAFE["scrub"]})}
    thread, altered = migration("testapp_address", test_database_name)

    def start_migration() -> None:
        thread.start()
        wait_for_the_migration("testapp_address", test_database_name)

    before_the_pg_dumps(monkeypatch, start_migration)
    started = time.monotonic()

    job = api.dump(config="scrubbed", inline=True)

    assert job.status == Job.Status.FAILED, "the dump went on behind the ALTER TABLE"
    assert "pg_dump" in job.error and "gave way" in job.error, job.error
    assert time.monotonic() - started < 30
    thread.join(timeout=30)
    assert altered == ["done"]
    assert api.ls() == []
    no_session_left(test_database_name, ("pg_dump",))


def test_copy_text_reads_back_the_same_whatever_the_sessions_defaults(
    target, library, kept_sessions, monkeypatch, local_location, test_database_name
):
    """A role or database may set DateStyle (day before month), extra_float_digits
    or the client encoding: the planned tables' COPY text is written and read back
    with pg_dump's settings, so a date, a float and an accent come back the same.
    (Not in the driver matrix: psycopg 3 reads no timestamp under a DateStyle
    other than ISO, so neither Django nor pgclone runs there with one; psycopg2
    sets ISO on its own sessions, and psql's sessions were the ones affected.)"""
    psql(
        "CREATE TABLE pgclone_raw_visit (id int PRIMARY KEY, "
        "author_id bigint REFERENCES testapp_author (id), day date, ratio float8, note text);"
        "INSERT INTO pgclone_raw_visit SELECT i, a.id, date '2024-11-03', 0.1::float8 + 0.2, "
        "'crème brûlée' FROM generate_series(1, 20) i JOIN testapp_author a ON a.id % 20 = i % 20",
        test_database_name,
    )
    # pgclone's sessions (its driver's and psql's, not Django's) start with a
    # role's settings, as ALTER ROLE … SET would give them
    settings = "-c DateStyle=SQL,DMY -c extra_float_digits=0"
    env, options = postgres.ConnInfo.env, postgres.session_options

    def role_env(conn):
        return {**env(conn), "PGCLIENTENCODING": "LATIN1"}

    monkeypatch.setattr(postgres.ConnInfo, "env", role_env)
    # before the pinned search_path, as the environment's PGOPTIONS would be
    monkeypatch.setattr(postgres, "session_options", lambda: f"{settings} {options()}")
    try:
        dumped = api.dump(config="library", inline=True)
        assert dumped.status == Job.Status.SUCCEEDED, dumped.error
        restored = api.restore(dumped.dump_key, database="target", inline=True)
        assert restored.status == Job.Status.SUCCEEDED, restored.error
    finally:
        psql("DROP TABLE pgclone_raw_visit", test_database_name)

    assert any(name == "pgclone_raw_visit" for name in kept_sessions)  # a psql session's
    visits = "SELECT DISTINCT day::text, ratio = 0.1::float8 + 0.2, note FROM pgclone_raw_visit"
    assert psql(visits, target) == "2024-11-03|t|crème brûlée"


def test_a_sql_ascii_database_s_bytes_pass_as_they_are():
    """COPY text is in the database's encoding, as pg_dump's: a SQL_ASCII database
    (bytes of any encoding in it) is written and read back byte for byte, whatever
    the client's encoding (a UTF8 client fails on such bytes)."""
    source, target = (f"pgclone_ascii_{uuid.uuid4().hex[:8]}_{end}" for end in ("a", "b"))
    create = "CREATE DATABASE {} TEMPLATE template0 ENCODING SQL_ASCII LC_COLLATE 'C' LC_CTYPE 'C'"
    table = "CREATE TABLE t (id int, label text)"
    try:
        for name in (source, target):
            psql(create.format(name))
            psql(table, name)
        psql(r"INSERT INTO t VALUES (1, E'caf\351'), (2, E'\211x')", source)
        conn = postgres.conn_info()
        with postgres.connect(conn.with_name(source)) as connection:
            settings = [s.as_string(connection) for s in plans.SETTINGS]
        script = "\n".join(
            ["BEGIN;", *(f"{s};" for s in settings), "COPY public.t TO STDOUT;", "END;"]
        )
        written = subprocess.run(
            [*parallel_copy.psql_argv(conn.with_name(source))], input=script.encode(),
            env={**conn.env(), "PGCLIENTENCODING": "UTF8"}, capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert written == b"1\tcaf\xe9\n2\t\x89x\n"

        with postgres.connect(conn.with_name(target)) as connection, connection.cursor() as cur:
            plan = {"encoding": "SQL_ASCII"}
            columns = {"schema": "public", "name": "t", "columns": ["id", "label"]}
            assert planned_restore.copy_from(cur, columns, io.BytesIO(written), plan) == 2
        same = r"SELECT count(*) FROM t WHERE label IN (E'caf\351', E'\211x')"
        assert psql(same, target) == "2"
    finally:
        for name in (source, target):
            psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
