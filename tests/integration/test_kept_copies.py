"""Kept copies (``keep_copy: true``): what a restore loaded, kept as a closed
database of pgclone's own once the job succeeded, and copied in template time
by the next restore of the same dump; on the real services."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import timezone

from pgclone import api, payloads, sweeping
from pgclone.exceptions import RestoreRefused
from pgclone.models import Job
from pgclone.pg import databases, driver, kept_copies, postgres
from pgclone.steps import restore as restore_steps
from tests.helpers import TARGET, authors, fingerprint, make_dump, pgclone_databases, psql, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MARKS = "SELECT coalesce(string_agg(note, ',' ORDER BY note), '') FROM testapp_mark"
RESTORE_CONFIGS = {
    "keep": {"keep_copy": True, "pre_swap_hooks": ["migrate", "testapp_mark --note hooked"]},
}


def kept_databases() -> list[str]:
    return psql(
        "SELECT coalesce(string_agg(datname, ' ' ORDER BY datname), '') FROM pg_database "
        "WHERE datname LIKE 'pgclone\\_kept\\_%'"
    ).split()


@pytest.fixture
def kept(target: str, local_location: str, settings) -> Iterator[None]:
    """Restore configs that keep copies; every kept copy is dropped afterwards,
    whoever made it (the tests' tenant drops its own)."""
    settings.PGCLONE_RESTORE_CONFIGS = RESTORE_CONFIGS
    before = set(kept_databases())
    yield
    for name in set(kept_databases()) - before:
        if psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'") == (
            "postgres"
        ):
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def kept_name(job: Job) -> str:
    asked = payloads.restore_options(job)
    return kept_copies.kept_name(asked.storage_location, asked.source.key)


def catalog(name: str) -> dict[str, str]:
    row = psql(
        "SELECT pg_get_userbyid(datdba), datistemplate, datallowconn, "
        "coalesce(datacl::text, ''), shobj_description(oid, 'pg_database') "
        f"FROM pg_database WHERE datname = '{name}'"
    ).split("|")
    return dict(zip(("owner", "template", "connections", "acl", "comment"), row, strict=True))


def inside(name: str, query: str) -> str:
    """Read a kept copy (closed to connections) by opening it for a moment."""
    psql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    try:
        return psql(query, name) if isinstance(query, str) else query(name)
    finally:
        psql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')


def swap_message(job: Job) -> str:
    return job.steps.get(name="swap").message


def test_the_second_restore_copies_the_kept_copy_and_runs_its_hooks_on_the_new_database(
    celery_worker, pgclone_cli, local_location, kept
):
    key = make_dump("ann", local_location)
    env = {"PGCLONE_TEST_RESTORE_CONFIGS": json.dumps(RESTORE_CONFIGS)}

    def restore():
        result = pgclone_cli("restore", key, "--database", "target", "--config", "keep",
                             "--wait", location=local_location, env=env)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result, Job.objects.filter(kind=Job.Kind.RESTORE).order_by("-created_at").first()

    first, job = restore()
    name = kept_name(job)
    assert "pg_restore of the schema" in first.stdout and "kept copy" not in first.stdout
    wait_for(lambda: "kept a copy" in swap_message(job), what="the copy kept")
    assert f"kept a copy of {key} as {name}" in swap_message(job)
    # pgclone's own, closed, not a template, no CONNECT for PUBLIC, marked with the dump.
    seen = catalog(name)
    assert seen["owner"] == "postgres" and seen["template"] == "f" and seen["connections"] == "f"
    assert "=c" not in seen["acl"].split("/")[0] and seen["acl"].startswith("{postgres=")
    assert seen["comment"].startswith("pgclone kept: ") and key in seen["comment"]
    # Taken before the hooks: the hook's row is in the live database only.
    assert psql(MARKS, TARGET) == "hooked" and inside(name, MARKS) == ""
    copy_before = inside(name, fingerprint)
    psql("INSERT INTO testapp_author (name) VALUES ('written-after')", TARGET)

    second, again = restore()

    assert f"from the kept copy {name} of {key}" in second.stdout
    assert "without pg_restore" in second.stdout and "Ran migrate" in second.stdout
    assert authors(TARGET) == ["ann"] and psql(MARKS, TARGET) == "hooked"
    assert inside(name, MARKS) == "" and inside(name, fingerprint) == copy_before
    assert kept_databases().count(name) == 1 and catalog(name)["connections"] == "f"
    assert "kept a copy" not in swap_message(again)  # it had one: nothing new to keep
    assert pgclone_databases() == []


def test_a_failed_restore_keeps_nothing(local_location, kept, settings):
    settings.PGCLONE_RESTORE_CONFIGS = {
        "keep": {"keep_copy": True, "pre_swap_hooks": ["testapp_fail"]}
    }
    key = make_dump("ann", local_location)

    job = api.restore(key, config="keep", database="target", inline=True)

    assert job.status == Job.Status.FAILED
    assert "keeping" not in job.error
    assert kept_name(job) not in kept_databases() and pgclone_databases() == []
    assert authors(TARGET) == ["target-only"]


def test_an_unscrubbed_dumps_copy_is_not_used_once_scrubbed_dumps_are_required(
    local_location, kept, settings
):
    settings.PGCLONE_SIGNING_KEY = "pgclone-test-signing-secret-kept"
    settings.PGCLONE_ALLOW_UNSIGNED = True
    key = make_dump("plain-ann", local_location)
    first = api.restore(key, config="keep", database="target", inline=True)
    assert first.status == Job.Status.SUCCEEDED, first.error
    name = kept_name(first)
    assert name in kept_databases()
    psql("INSERT INTO testapp_author (name) VALUES ('written-after')", TARGET)

    # Asked for while it was allowed; the worker's setting is what counts.
    def worker_requires_scrubbed(job: Job) -> None:
        settings.PGCLONE_REQUIRE_SCRUBBED = True

    second = api.restore(key, config="keep", database="target", inline=True,
                         on_start=worker_requires_scrubbed)  # fmt: skip

    assert second.status == Job.Status.FAILED
    assert f"Dump {key} is not scrubbed" in second.error
    assert second.steps.get(name="restore_temp").status == "skipped"
    assert sorted(authors(TARGET)) == ["plain-ann", "written-after"]
    with pytest.raises(RestoreRefused, match="not scrubbed"):
        api.restore(key, config="keep", database="target", inline=True)
    assert name in kept_databases()  # left as it was, for a machine that may use it
    assert pgclone_databases() == []


class Tenant:
    """A role with nothing but CREATEDB on the shared server."""

    def __init__(self, name: str) -> None:
        self.name = name

    def psql(self, sql: str) -> str:
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", self.name, "-d", "postgres", "-AtX", "-v",
             "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip


@pytest.fixture
def tenant(kept) -> Iterator[Tenant]:
    name = f"pgclone_kept_tenant_{os.environ['PGCLONE_TEST_SESSION']}"
    psql(f"CREATE ROLE {name} LOGIN CREATEDB NOSUPERUSER")
    yield Tenant(name)
    for database in psql(
        "SELECT coalesce(string_agg(datname, ' '), '') FROM pg_database "
        f"WHERE datdba = '{name}'::regrole"
    ).split():
        psql(f'ALTER DATABASE "{database}" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true')
        psql(f'DROP DATABASE "{database}" WITH (FORCE)')
    psql(f"DROP ROLE {name}")


def test_a_tenant_holding_the_pending_copys_lock_does_not_stop_the_keeping(
    local_location, tenant, monkeypatch
):
    """Any role that may connect to the server's postgres database may take an
    advisory lock, the pending copy's too: the worker keeps the copy anyway."""
    from pgclone.steps import kept as kept_steps

    key = make_dump("ann", local_location)
    holder = driver.connect(host="127.0.0.1", user=tenant.name, dbname="postgres")
    holder.autocommit = True
    keep = kept_steps._confirm_and_say

    def with_the_tenant_holding_its_lock(job: Job, late: str = "") -> None:
        pending = kept_copies.pending_name(job.pk)
        with kept_copies.pending_lock(holder, pending) as held:
            assert held  # the tenant's session holds it while the worker keeps
            keep(job, late)

    monkeypatch.setattr(kept_steps, "_confirm_and_say", with_the_tenant_holding_its_lock)
    with contextlib.closing(holder):
        job = api.restore(key, config="keep", database="target", inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert f"kept a copy of {key} as {kept_name(job)}" in swap_message(job)
    assert kept_name(job) in kept_databases() and pgclone_databases() == []


def test_a_database_of_the_kept_name_made_by_another_role_is_never_used_nor_dropped(
    local_location, tenant
):
    key = make_dump("ann", local_location)
    location = api.get_storage().location
    name = kept_copies.kept_name(location, key)
    # The tenant's database, with the mark pgclone would put on it, and a template.
    tenant.psql(f'CREATE DATABASE "{name}"')
    forged = json.dumps({"key": key, "location": location, "job": "x", "made": "z"})
    tenant.psql(f"COMMENT ON DATABASE \"{name}\" IS 'pgclone kept: {forged}'")
    tenant.psql(f'ALTER DATABASE "{name}" IS_TEMPLATE true')

    job = api.restore(key, config="keep", database="target", inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    loaded = job.steps.get(name="restore_temp").message
    assert f"Did not use {name!r} as the kept copy of {key}: it is owned by {tenant.name}" in loaded
    assert "pg_restore of the schema" in loaded
    assert authors(TARGET) == ["ann"]
    message = wait_for(lambda: "kept no copy" in swap_message(job) and swap_message(job))
    assert f"a database {name!r} exists and is not pgclone's" in message
    assert catalog(name)["owner"] == tenant.name  # never dropped, never replaced
    assert pgclone_databases() == []


def test_an_unmarked_database_of_the_kept_name_is_refused(local_location, kept):
    key = make_dump("ann", local_location)
    name = kept_copies.kept_name(api.get_storage().location, key)
    psql(f'CREATE DATABASE "{name}"')  # pgclone's role, but no kept mark

    job = api.restore(key, config="keep", database="target", inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert "it does not bear pgclone's kept mark" in job.steps.get(name="restore_temp").message
    wait_for(lambda: "kept no copy" in swap_message(job))
    assert catalog(name)["comment"] == ""  # left as it was
    assert pgclone_databases() == []


def test_the_oldest_kept_copies_go_beyond_the_limit(local_location, kept, settings):
    settings.PGCLONE_KEPT_COPIES = 1
    first_key = make_dump("ann", local_location)
    first = api.restore(first_key, config="keep", database="target", inline=True)
    assert first.status == Job.Status.SUCCEEDED, first.error
    second_key = make_dump("bob", local_location)

    second = api.restore(second_key, config="keep", database="target", inline=True)

    assert second.status == Job.Status.SUCCEEDED, second.error
    assert kept_name(second) in kept_databases() and kept_name(first) not in kept_databases()
    assert f"dropped the older {kept_name(first)}" in swap_message(second)


@pytest.fixture
def new_names(kept) -> Iterator[list[str]]:
    """Names for the databases ``copy`` makes; dropped afterwards."""
    session = os.environ["PGCLONE_TEST_SESSION"]
    names = [f"kept_copy_{session}_{n}" for n in range(2)]
    yield names
    for name in names:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_copy_makes_the_kept_copy_first_then_copies_it(
    celery_worker, pgclone_cli, local_location, new_names
):
    key = make_dump("ann", local_location)
    first, second = new_names

    def copy(name):
        return pgclone_cli("copy", key, name, "--wait", location=local_location)

    made = copy(first)

    assert made.returncode == 0, made.stdout + made.stderr
    assert "Copy succeeded in" in made.stdout and f"database {first!r} holds {key}" in made.stdout
    assert "pg_restore of the schema" in made.stdout and "No hooks configured" in made.stdout
    assert authors(first) == ["ann"] and psql(MARKS, first) == ""
    seen = catalog(first)
    assert seen["owner"] == "postgres" and seen["connections"] == "t" and seen["comment"] == ""
    job = Job.objects.get(database_name=first)
    name = kept_name(job)
    wait_for(lambda: name in kept_databases(), what="the copy kept")
    assert authors(TARGET) == ["target-only"]  # the alias's database is not touched

    again = copy(second)

    assert again.returncode == 0, again.stdout + again.stderr
    assert f"from the kept copy {name} of {key}" in again.stdout
    assert authors(second) == ["ann"] and catalog(second)["comment"] == ""
    assert kept_databases().count(name) == 1
    refused = copy(second)
    assert refused.returncode == 2 and f"Database {second!r} exists already" in refused.stderr
    assert pgclone_databases() == []


def test_a_missing_database_is_created_only_when_the_config_says_create_missing(
    local_location, kept, settings
):
    settings.PGCLONE_RESTORE_CONFIGS = {
        "default": {"pre_swap_hooks": []},
        "create": {"pre_swap_hooks": [], "create_missing": True},
    }
    key = make_dump("ann", local_location)
    psql(f'DROP DATABASE "{TARGET}" WITH (FORCE)')
    exists = f"SELECT count(*) FROM pg_database WHERE datname = '{TARGET}'"

    with pytest.raises(RestoreRefused, match="does not say create_missing: true"):
        api.restore(key, database="target", inline=True)
    assert psql(exists) == "0"

    job = api.restore(key, config="create", database="target", inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert authors(TARGET) == ["ann"]
    assert pgclone_databases() == []


def test_a_passed_trial_keeps_the_copy_it_proved_and_a_failed_one_keeps_none(
    local_location, kept, settings
):
    settings.PGCLONE_RESTORE_CONFIGS = {
        "keep": {"keep_copy": True, "pre_swap_hooks": ["migrate"]},
        "failing": {"keep_copy": True, "pre_swap_hooks": ["testapp_fail"]},
    }
    key = make_dump("ann", local_location)

    failed = api.trial_restore(key, config="failing", inline=True)

    assert failed.status == Job.Status.FAILED
    assert kept_databases() == [] and pgclone_databases() == []

    trial = api.trial_restore(key, config="keep", inline=True)

    assert trial.status == Job.Status.SUCCEEDED, trial.error
    name = kept_name(trial)
    assert "kept as" in trial.steps.get(name="compare").message
    assert f"kept a copy of {key} as {name}" in trial.steps.get(name="record").message
    assert kept_databases() == [name] and catalog(name)["connections"] == "f"
    assert inside(name, "SELECT count(*) FROM django_migrations") != "0"

    restored = api.restore(key, config="keep", database="target", inline=True)

    assert restored.status == Job.Status.SUCCEEDED, restored.error
    assert f"from the kept copy {name}" in restored.steps.get(name="restore_temp").message
    assert authors(TARGET) == ["ann"]
    assert pgclone_databases() == []


def test_a_kept_copy_goes_with_its_dump_and_ls_local_long_shows_it(
    pgclone_cli, local_location, kept, settings
):
    settings.PGCLONE_DUMP_CONFIGS = {"default": {"keep_last": 1}}
    old_key = make_dump("ann", local_location)
    old = api.restore(old_key, config="keep", database="target", inline=True)
    assert old.status == Job.Status.SUCCEEDED, old.error
    old_name = kept_name(old)

    listed = pgclone_cli("ls", "--local", "--long", "--database", "target", location=local_location)

    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(old_name)]
    assert old_key in row and ("KiB" in row or "MiB" in row)
    assert f":{old_name}" not in listed.stdout  # not a source for `restore :NAME`

    new_key = make_dump("bob", local_location)  # its upload applies retention: keep_last 1
    assert [str(key) for key in api.ls()] == [new_key]
    assert old_name not in kept_databases()  # the copy went with its dump

    new = api.restore(new_key, config="keep", database="target", inline=True)
    assert new.status == Job.Status.SUCCEEDED, new.error
    new_name = kept_name(new)
    assert new_name in kept_databases()
    for path in (Path(local_location) / new_key, Path(f"{Path(local_location) / new_key}.json")):
        path.unlink()  # removed by other means than prune

    api.sweep()

    assert new_name not in kept_databases()


def test_the_sweep_drops_the_copy_of_a_job_that_died_half_way(local_location, kept, settings):
    from tests.celery_app import app
    from tests.processes import own_queue

    settings.PGCLONE_CELERY_QUEUE = queue = own_queue("nobody")
    try:
        key = make_dump("ann", local_location)
        job = api.restore(key, config="keep", database="target")
        for step in ("fetch", "restore_temp"):  # a worker ran these, then was never seen again
            assert restore_steps.WORKFLOW.run(step, job.pk)
        pending = kept_copies.pending_name(job.pk)
        assert pending in psql("SELECT string_agg(datname, ' ') FROM pg_database").split()
        assert catalog(pending)["connections"] == "f"

        ended = sweeping.sweep(now=timezone.now() + dt.timedelta(hours=7))

        assert [found.pk for found in ended] == [job.pk]
        assert pending not in psql("SELECT string_agg(datname, ' ') FROM pg_database").split()
        assert kept_name(job) not in kept_databases() and pgclone_databases() == []
        assert authors(TARGET) == ["target-only"]
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)


def test_a_copy_left_pending_by_a_job_that_succeeded_is_kept_by_the_sweep(
    local_location, kept, monkeypatch
):
    """The worker is lost just after the job was recorded succeeded, before it
    made the pending copy the kept one: the sweep keeps it, unless a worker
    holds it (keeping it), and drops it once nobody will."""
    from pgclone.engine import jobs
    from pgclone.steps import kept as kept_steps

    key = make_dump("ann", local_location)
    with monkeypatch.context() as lost:  # the worker's last act never comes
        lost.setattr(kept_steps, "_confirm_and_say", lambda job, late="": None)
        job = api.restore(key, config="keep", database="target", inline=True)
    pending = kept_copies.pending_name(job.pk)
    assert job.status == Job.Status.SUCCEEDED and authors(TARGET) == ["ann"]
    assert pending in pgclone_databases() and kept_name(job) not in kept_databases()

    sweeping.sweep()

    job.refresh_from_db()
    assert kept_name(job) in kept_databases() and pending not in pgclone_databases()
    assert swap_message(job).endswith(
        f"kept a copy of {key} as {kept_name(job)} (by the sweep: the worker was lost before "
        "it kept it)"
    )
    assert catalog(kept_name(job))["comment"].startswith("pgclone kept: ")
    again = api.restore(key, config="keep", database="target", inline=True)
    assert "from the kept copy" in again.steps.get(name="restore_temp").message

    # A worker keeping its copy holds its lock: the sweep leaves it be, then
    # drops it once the worker is gone without keeping it.
    with monkeypatch.context() as lost:
        lost.setattr(kept_steps, "_confirm_and_say", lambda job, late="": None)
        psql(f'DROP DATABASE "{kept_name(job)}"')
        third = api.restore(key, config="keep", database="target", inline=True)
    pending = kept_copies.pending_name(third.pk)
    assert jobs.claim_result(third, "kept_pending", pending)
    with databases.maintenance(postgres.conn_info()) as worker:
        with kept_copies.pending_lock(worker, pending) as held:
            assert held
            sweeping.sweep()
            assert pending in pgclone_databases()
        sweeping.sweep()
    assert pending not in pgclone_databases() and kept_name(third) not in kept_databases()
