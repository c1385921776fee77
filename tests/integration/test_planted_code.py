"""A restore never runs code planted in a dump with more rights than the planter had.

A role that is not a superuser plants, in the database that gets dumped, code
that writes a file on the database server (``COPY … TO PROGRAM``) only when it
runs with superuser rights: an index expression, a check constraint, a column
default and a trigger on ``django_migrations`` (which the ``migrate`` hook
writes), a trigger on pgclone's job table (which the swap's history copy
writes), and a SECURITY DEFINER function that anyone may call after the
restore. Restored as the database's owner (the README's advice) nothing is
written; restored as a superuser with PGCLONE_ALLOW_SUPERUSER_RESTORE each
vector fires (so the test can fail); without the setting a superuser's
restore is refused before anything is created.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from pgclone import api
from pgclone.models import Job
from pgclone.pg import databases, job_tables, postgres, search_path
from tests import pg
from tests.helpers import OWNER_ROLE, fingerprint, pgclone_databases, psql, wait_for
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

PLANTER = f"pgclone_planter_{os.environ['PGCLONE_TEST_SESSION']}"
OWNER = OWNER_ROLE  # the "owner" alias connects as this role
# What a restore into a database that does not hold pgclone's job tables runs
# (the history copy, into the database that does, is tested on its own below).
VECTORS = {"index", "check", "default", "trigger_migrations"}
# The migration `migrate` re-applies (its ALTER COLUMN is idempotent), so that it
# inserts into django_migrations; nothing depends on Django's last auth migration.
REAPPLIED = ("auth", "0012_alter_user_first_name_max_length")


def plant(database: str, outbox: Path) -> None:
    """What an application role (not a superuser) can do in its own database."""
    psql(f"DROP ROLE IF EXISTS {PLANTER}")
    psql(f"CREATE ROLE {PLANTER} LOGIN NOSUPERUSER")
    # The planter plays the application role: it owns the application's tables.
    psql(
        f"GRANT CREATE ON SCHEMA public TO {PLANTER}; "
        f"ALTER TABLE django_migrations OWNER TO {PLANTER}; "
        f"ALTER TABLE pgclone_job OWNER TO {PLANTER}; "
        f"DELETE FROM django_migrations WHERE app = '{REAPPLIED[0]}' AND name = '{REAPPLIED[1]}'",
        database,
    )
    connection = pg.driver.connect(host="127.0.0.1", user=PLANTER, dbname=database)
    connection.autocommit = True
    statements = f"""
    CREATE FUNCTION pwn(vector text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $f$
    BEGIN
        IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE format('COPY (SELECT 1) TO PROGRAM %L',
                           'cat > ' || '{outbox}' || '/' || vector);
        END IF;
        RETURN true;
    END $f$;
    CREATE FUNCTION pwn_index(value text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $f$
    BEGIN PERFORM public.pwn('index'); RETURN value; END $f$;
    CREATE FUNCTION pwn_check(value text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$
    BEGIN RETURN public.pwn('check'); END $f$;
    CREATE FUNCTION pwn_default() RETURNS text LANGUAGE plpgsql AS $f$
    BEGIN PERFORM public.pwn('default'); RETURN 'x'; END $f$;
    CREATE FUNCTION pwn_trigger() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN PERFORM public.pwn(TG_ARGV[0]); RETURN NULL; END $f$;
    CREATE FUNCTION planted_definer() RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $f$
    BEGIN RETURN public.pwn('definer'); END $f$;

    CREATE TABLE planted (id int PRIMARY KEY, name text CHECK (pwn_check(name)));
    INSERT INTO planted VALUES (1, 'one'), (2, 'two');
    CREATE INDEX planted_expression ON planted (pwn_index(name));
    ALTER TABLE django_migrations ADD COLUMN planted text DEFAULT pwn_default();
    CREATE TRIGGER planted AFTER INSERT ON django_migrations
        FOR EACH STATEMENT EXECUTE FUNCTION pwn_trigger('trigger_migrations');
    CREATE TRIGGER planted AFTER INSERT OR DELETE ON pgclone_job
        FOR EACH STATEMENT EXECUTE FUNCTION pwn_trigger('trigger_jobs');
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute(statements)
    finally:
        connection.close()


def fired(outbox: Path) -> set[str]:
    return {path.name for path in outbox.iterdir()}


@pytest.fixture
def owner_role(target: str) -> Iterator[str]:
    psql(f"DROP ROLE IF EXISTS {OWNER}")
    psql(f"CREATE ROLE {OWNER} LOGIN CREATEDB NOSUPERUSER")
    psql(f'ALTER DATABASE "{target}" OWNER TO {OWNER}')
    yield OWNER
    from tests.helpers import drop_target_databases

    drop_target_databases()
    for role in (OWNER, PLANTER):
        for database in ("postgres",):
            psql(f"DROP OWNED BY {role} CASCADE", database)
        psql(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def planted_dump(target: str, owner_role: str, outbox: Path, local_location: str) -> str:
    """A dump of the restore target holding the planted code (dumped by a
    superuser: pg_dump runs none of it)."""
    plant(target, outbox)
    job = api.dump(database="target", inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert fired(outbox) == set()  # planting and dumping ran nothing privileged
    # The live database is a staging copy its owner restored earlier: pgclone's
    # tables there are the owner's (the history copy reads them).
    psql(
        f"ALTER TABLE pgclone_job OWNER TO {OWNER}; ALTER TABLE pgclone_jobstep OWNER TO {OWNER}",
        target,
    )
    return job.dump_key


def call_definer(database: str) -> None:
    """What the planter (or a compromised application) can do after the restore."""
    connection = pg.driver.connect(host="127.0.0.1", user=PLANTER, dbname=database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT planted_definer()")
    finally:
        connection.close()


def reapplied(database: str) -> bool:
    return (
        psql(
            f"SELECT count(*) FROM django_migrations "
            f"WHERE app = '{REAPPLIED[0]}' AND name = '{REAPPLIED[1]}'",
            database,
        )
        == "1"
    )


@pytest.fixture
def strict_worker(test_database_name, moto_server, tmp_path, settings):
    """A worker whose settings refuse superuser restores (this process's allow them)."""
    queue = own_queue("strict")
    settings.PGCLONE_CELERY_QUEUE = queue
    worker = start_worker(
        test_database_name,
        tmp_path / "worker.log",
        moto=moto_server,
        queue=queue,
        pool="solo",
        env={"PGCLONE_TEST_ALLOW_SUPERUSER": "0"},
    )
    yield worker
    stop_worker(worker)


def test_restored_by_the_owner_no_planted_code_runs_privileged(
    planted_dump, strict_worker, target, outbox
):
    job = api.restore(planted_dump, database="owner", pre_swap_hooks=["migrate"])
    job = wait_for(
        lambda: Job.objects.filter(pk=job.pk, status__in=["succeeded", "failed"]).first(),
        timeout=120,
        what="the restore to end",
    )

    assert job.status == Job.Status.SUCCEEDED, job.error
    # The planted objects came through and ran (as the owner, who may do no harm)...
    assert psql("SELECT string_agg(name, ',' ORDER BY id) FROM planted", target) == "one,two"
    assert (
        psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'planted_expression'", target)
        == "1"
    )
    # ...the pre-swap hook worked (migrate recorded the migration it re-applied)...
    assert reapplied(target)
    assert psql("SELECT pg_get_userbyid(datdba) FROM pg_database "
                f"WHERE datname = '{target}'") == OWNER  # fmt: skip
    call_definer(target)
    # ...and nothing ran with a superuser's rights.
    assert fired(outbox) == set()
    assert pgclone_databases() == []


def test_a_superuser_restore_is_refused_before_anything_is_created(planted_dump, target, settings):
    settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = False
    before = fingerprint(target)

    with pytest.raises(CommandError) as raised:
        call_command(
            "pgclone", "restore", planted_dump, "--database", "target", stdout=io.StringIO()
        )

    assert raised.value.returncode == 2
    message = str(raised.value)
    assert "as role 'postgres', a superuser" in message
    assert "PGCLONE_ALLOW_SUPERUSER_RESTORE" in message and "owns" in message
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    assert job.status == Job.Status.FAILED and "a superuser" in job.error
    assert fingerprint(target) == before and pgclone_databases() == []


def test_the_worker_refuses_too(planted_dump, strict_worker, target, outbox):
    # This process allows superuser restores; the worker that would run it does not.
    before = fingerprint(target)
    job = api.restore(planted_dump, database="target", pre_swap_hooks=["migrate"])
    job = wait_for(
        lambda: Job.objects.filter(pk=job.pk, status="failed").first(),
        timeout=60,
        what="the worker to refuse the restore",
    )

    assert "a superuser" in job.error
    assert job.steps.get(name="fetch").status == "failed"
    assert fingerprint(target) == before and pgclone_databases() == [] and fired(outbox) == set()


def test_with_the_escape_hatch_a_superuser_restore_runs_every_vector(
    planted_dump, target, outbox, settings
):
    """The attack is real: this is what the refusal prevents."""
    settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = True

    job = api.restore(planted_dump, database="target", pre_swap_hooks=["migrate"], inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert fired(outbox) == VECTORS
    call_definer(target)
    assert fired(outbox) == VECTORS | {"definer"}
    assert os.stat(outbox / "index").st_uid != os.getuid()  # written by the server's user


@pytest.mark.parametrize(("alias", "runs"), [("owner", set()), ("target", {"trigger_jobs"})])
def test_the_history_copy_runs_planted_triggers_as_the_role_pgclone_connects_as(
    planted_dump, target, outbox, alias, runs, settings
):
    """At the swap pgclone copies its job history into the new database (when that
    is the one holding the job tables), firing the dump's triggers on them: as
    the owner they can do no harm; as a superuser (allowed or not, the copy is
    the same code) they run programs on the server."""
    settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = True
    job = api.restore(planted_dump, database="target", pre_swap_hooks=[], inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    new = f"pgclone_scratch_{uuid.uuid4().hex[:10]}"
    psql(f'CREATE DATABASE "{new}" TEMPLATE "{target}" OWNER {OWNER}')
    for database in (target, new):  # the owner's, as in a database it restored
        psql(f"ALTER TABLE pgclone_job OWNER TO {OWNER}; "
             f"ALTER TABLE pgclone_jobstep OWNER TO {OWNER}", database)  # fmt: skip
    (outbox / "index").unlink()  # from the restore above, made as a superuser
    (outbox / "check").unlink()
    try:
        with databases.Maintenance(postgres.conn_info(alias)) as pg:
            path = search_path.project_path(pg.conn.with_name(target))
            copy = job_tables.JobHistoryCopy(pg, live=target, new=new, path=path)
            copy.copy()
    finally:
        psql(f'DROP DATABASE "{new}"')

    assert fired(outbox) == runs


ESCALATE = """
CREATE FUNCTION escalate(value text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
    BEGIN EXECUTE 'SET ROLE postgres'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE format('GRANT pg_execute_server_program TO %I', session_user);
    EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'cat > {outbox}/escalated');
    EXCEPTION WHEN OTHERS THEN NULL; END;
    RETURN true;
END $f$;
CREATE TABLE escalating (id int PRIMARY KEY, name text CHECK (escalate(name)));
INSERT INTO escalating VALUES (1, 'one');
"""
INTERMEDIATE = f"pgclone_intermediate_{os.environ['PGCLONE_TEST_SESSION']}"


@pytest.fixture
def escalating_dump(target: str, owner_role: str, outbox: Path, local_location: str) -> str:
    """A dump whose CHECK constraint, run as the restoring role, becomes a superuser
    (SET ROLE), grants its session's user pg_execute_server_program (CREATEROLE),
    and runs a program on the database server, whichever of these it can."""
    psql(f"DROP ROLE IF EXISTS {PLANTER}")
    psql(f"CREATE ROLE {PLANTER} LOGIN NOSUPERUSER")
    psql(f"GRANT CREATE ON SCHEMA public TO {PLANTER}", target)
    connection = pg.driver.connect(host="127.0.0.1", user=PLANTER, dbname=target)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(ESCALATE.replace("{outbox}", str(outbox)))
    finally:
        connection.close()
    job = api.dump(database="target", inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert fired(outbox) == set()
    yield job.dump_key
    psql(f"DROP ROLE IF EXISTS {INTERMEDIATE}")


@pytest.mark.parametrize(
    ("power", "refusal"),
    [
        (f"GRANT postgres TO {OWNER}", "which can become the superuser 'postgres' (SET ROLE)"),
        (f"ALTER ROLE {OWNER} CREATEROLE", "which has CREATEROLE"),
        (
            f"CREATE ROLE {INTERMEDIATE} NOINHERIT; "
            f"GRANT pg_execute_server_program TO {INTERMEDIATE}; "
            f"GRANT {INTERMEDIATE} TO {OWNER}",
            "a member of pg_execute_server_program",
        ),
    ],
    ids=["member-of-a-superuser", "createrole", "member-through-a-noinherit-role"],
)
def test_a_role_that_can_become_powerful_is_refused_before_anything_runs(
    escalating_dump, target, outbox, power, refusal, settings
):
    settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = False
    psql(power)
    before = fingerprint(target)

    with pytest.raises(CommandError) as raised:
        call_command(
            "pgclone", "restore", escalating_dump, "--database", "owner", stdout=io.StringIO()
        )

    assert raised.value.returncode == 2
    assert f"as role '{OWNER}', {refusal}" in str(raised.value)
    assert fired(outbox) == set()
    assert fingerprint(target) == before and pgclone_databases() == []


def test_ending_sessions_is_no_power_to_refuse(escalating_dump, target, outbox, settings):
    settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = False
    psql(f"GRANT pg_signal_backend TO {OWNER}")

    job = api.restore(escalating_dump, database="owner", pre_swap_hooks=[], inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert psql("SELECT count(*) FROM escalating", target) == "1"
    assert fired(outbox) == set()
