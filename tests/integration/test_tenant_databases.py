"""Another role on the server gains nothing by naming its databases as pgclone does.

A tenant role with nothing but CREATEDB (the threat model's "create databases
on the same server") makes ``TARGET__previous``, marks it a template so that
any role may copy it, and makes ``pgclone_old_…`` / ``pgclone_tmp_…``
databases whose names and comments say they are pgclone's. pgclone copies,
replaces, re-opens and drops only databases it made: owned by the role it
connects as, not templates, marked for the job and live database.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from pgclone import sweeping
from pgclone.models import Job
from pgclone.pg import databases
from pgclone.pg import swap as swapping
from tests.helpers import TARGET, authors, fingerprint, make_dump, pgclone_databases, psql

pytestmark = pytest.mark.django_db(transaction=True)

PREVIOUS = databases.copy_name(TARGET, "previous")


class Tenant:
    """A role of its own on the shared server, that connects as itself."""

    def __init__(self, name: str) -> None:
        self.name = name

    def psql(self, sql: str, database: str = "postgres") -> str:
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", self.name, "-d", database, "-AtX", "-v",
             "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    def databases(self) -> list[str]:
        return psql(
            "SELECT coalesce(string_agg(datname, ' ' ORDER BY datname), '') FROM pg_database "
            f"WHERE datdba = '{self.name}'::regrole"
        ).split()

    def plant_previous(self) -> None:
        """``TARGET__previous`` holding the tenant's rows, a template: any role may copy it."""
        self.psql(f'CREATE DATABASE "{PREVIOUS}"')
        self.psql(
            "CREATE TABLE testapp_author (id serial PRIMARY KEY, name text); "
            "INSERT INTO testapp_author (name) VALUES ('planted')",
            PREVIOUS,
        )
        self.psql(f'ALTER DATABASE "{PREVIOUS}" IS_TEMPLATE true')


@pytest.fixture
def tenant(target: str) -> Iterator[Tenant]:
    name = f"pgclone_tenant_{os.environ['PGCLONE_TEST_SESSION']}"
    psql(f"CREATE ROLE {name} LOGIN CREATEDB NOSUPERUSER")
    tenant = Tenant(name)
    yield tenant
    for database in tenant.databases():
        # A template, or a database refusing connections, can't be dropped as it is.
        psql(f'ALTER DATABASE "{database}" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true')
        psql(f'DROP DATABASE "{database}" WITH (FORCE)')
    psql(f"DROP ROLE {name}")


def is_template(name: str) -> bool:
    return psql(f"SELECT datistemplate FROM pg_database WHERE datname = '{name}'") == "t"


def allows_connections(name: str) -> bool:
    return psql(f"SELECT datallowconn FROM pg_database WHERE datname = '{name}'") == "t"


def test_a_tenants_previous_is_never_copied(pgclone_cli, local_location, tenant):
    tenant.plant_previous()
    before = fingerprint(TARGET)

    listed = pgclone_cli("ls", "--local", "--database", "target", location=local_location)
    result = pgclone_cli(
        "restore", ":previous", "--database", "target", "--inline", location=local_location,
        env={"PGCLONE_TEST_LOCAL_SOURCES": "[]"},
    )  # fmt: skip

    assert ":previous" not in listed.stdout
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is not a copy pgclone kept" in result.stderr
    assert f"owned by {tenant.name}" in result.stderr
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    assert job.status == Job.Status.FAILED and "is not a copy pgclone kept" in job.error
    assert job.steps.get(name="restore_temp").status == "skipped"  # no copy was made
    assert fingerprint(TARGET) == before  # nothing of the tenant's was copied in
    assert tenant.databases() == [PREVIOUS] and is_template(PREVIOUS)
    assert pgclone_databases() == []


def test_a_tenants_database_named_as_pgclones_is_never_copied(local_location, tenant):
    from pgclone import api

    name = "pgclone_old_" + "0" * 20
    tenant.psql(f'CREATE DATABASE "{name}"')
    tenant.psql(f'ALTER DATABASE "{name}" IS_TEMPLATE true')
    before = fingerprint(TARGET)

    job = api.restore(f":{name}", database="target", inline=True, pre_swap_hooks=[])

    assert job.status == Job.Status.FAILED and "is not a copy pgclone kept" in job.error
    assert fingerprint(TARGET) == before and pgclone_databases() == []


def test_a_reversible_restore_that_cannot_keep_previous_fails_before_the_swap(
    pgclone_cli, local_location, tenant
):
    key = make_dump("restored", local_location)
    tenant.plant_previous()
    before = fingerprint(TARGET)

    result = pgclone_cli(
        "restore", key, "--reversible", "--database", "target", "--inline",
        location=local_location,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr
    assert "A reversible restore can't keep :previous" in result.stderr
    assert f"owned by {tenant.name}" in result.stderr
    assert "the live database is unchanged" in result.stderr
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    assert job.status == Job.Status.FAILED
    assert job.steps.get(name="swap").status == "skipped"
    assert fingerprint(TARGET) == before
    # The tenant's database is as it made it: same name, a template, its rows.
    assert tenant.databases() == [PREVIOUS] and is_template(PREVIOUS)
    assert authors(PREVIOUS) == ["planted"]
    assert pgclone_databases() == []


def test_the_sweep_ignores_a_tenants_old_and_marked_databases(local_location, tenant, caplog):
    make_dump("any", local_location)
    ours = Job.objects.get(kind=Job.Kind.DUMP)  # a job of this project's job table
    digits = databases.job_digits(ours.pk)
    old, temp = f"pgclone_old_{digits}", f"pgclone_tmp_{digits}"
    # The tenant's imitation of what a swap cut short leaves: a closed old
    # database, and a marker saying the swap closed our live database.
    tenant.psql(f'CREATE DATABASE "{old}"')
    tenant.psql(f'ALTER DATABASE "{old}" WITH ALLOW_CONNECTIONS false')
    tenant.psql(f'CREATE DATABASE "{temp}"')
    marker = swapping.marker(ours.pk, TARGET).replace("'", "''")
    tenant.psql(f"COMMENT ON DATABASE \"{temp}\" IS '{marker}'")
    # The live database, closed by hand for maintenance.
    psql(f'ALTER DATABASE "{TARGET}" WITH ALLOW_CONNECTIONS false')
    try:
        with caplog.at_level("WARNING", logger="pgclone"):
            sweeping.sweep()

        assert not allows_connections(TARGET)
        # (Whether the tenant's database is open says nothing: the sweep of
        # another project on this server, of an earlier pgclone, may open it.)
        reopened = [r.getMessage() for r in caplog.records if "re-opened" in r.getMessage()]
        assert not [message for message in reopened if old in message or TARGET in message]
        assert tenant.databases() == sorted([old, temp])  # nor dropped as leftovers
    finally:
        psql(f'ALTER DATABASE "{TARGET}" WITH ALLOW_CONNECTIONS true')


def test_copies_made_by_earlier_versions_are_still_restored(pgclone_cli, local_location, target):
    key = make_dump("restored", local_location)
    first = pgclone_cli(
        "restore", key, "--reversible", "--database", "target", "--inline",
        location=local_location,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    made = Job.objects.get(kind=Job.Kind.RESTORE)
    comment = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = "
    assert psql(f"{comment} '{PREVIOUS}'") == f"pgclone:{made.pk}:{TARGET}"
    # As an earlier pgclone left it: the old live database's own comment, no mark.
    psql(f"COMMENT ON DATABASE \"{PREVIOUS}\" IS 'the application database'")

    back = pgclone_cli(
        "restore", ":previous", "--database", "target", "--inline", location=local_location
    )

    assert back.returncode == 0, back.stdout + back.stderr
    assert authors(TARGET) == ["target-only"]


def test_a_previous_made_while_a_reversible_restore_runs_stops_it_before_the_swap(
    local_location, tenant, monkeypatch
):
    """Checked again in the swap step: the tenant may make its database after
    the restore's first check (here, while the pre-swap hook runs)."""
    from pgclone import api, hooks

    key = make_dump("restored", local_location)
    before = fingerprint(TARGET)

    def plant_then_run(hook_list):
        tenant.plant_previous()
        return "planted"

    monkeypatch.setattr(hooks, "run", plant_then_run)
    job = api.restore(key, database="target", inline=True, reversible=True,
                      pre_swap_hooks=["testapp_mark"])  # fmt: skip

    assert job.status == Job.Status.FAILED
    assert job.steps.get(name="pre_swap").status == "succeeded"
    assert job.steps.get(name="swap").status == "failed"
    assert "A reversible restore can't keep :previous" in job.error
    assert fingerprint(TARGET) == before
    assert tenant.databases() == [PREVIOUS] and authors(PREVIOUS) == ["planted"]
    assert pgclone_databases() == []
