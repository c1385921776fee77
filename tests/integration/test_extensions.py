"""A GeoDjango project restores without a superuser: extensions only a superuser
can create (postgis, postgres_fdw) come from an administrator's template database.

As the README asks, the project connects as the role that owns its database
(LOGIN CREATEDB, not a superuser); an administrator installed postgis and
postgres_fdw in it, and once made a template database with the same
extensions, marked IS_TEMPLATE, that PGCLONE_TEMPLATE_DATABASE names. Restores,
reversible restores and trial restores run by a worker that refuses superuser
restores bring back the rows, their geometries and the user's own rows of
PostGIS's ``spatial_ref_sys``. Without the setting the restore fails before
anything is restored, naming the extensions and the setting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import checks

from pgclone import api
from pgclone.archive import containers
from pgclone.models import Job
from pgclone.pg import databases
from tests import pg
from tests.helpers import drop_target_databases, pgclone_databases, psql, wait_for
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = [pytest.mark.django_db(transaction=True)]

SESSION = os.environ["PGCLONE_TEST_SESSION"]
OWNER = f"pgclone_geo_{SESSION}"  # the "geo" alias connects as this role
TEMPLATE = f"pgclone_geo_template_{SESSION}"
EXTENSIONS = "CREATE EXTENSION postgis; CREATE EXTENSION postgres_fdw;"
# What an administrator runs once in the template (docs/extensions.md).
TEMPLATE_GRANTS = "GRANT INSERT ON public.spatial_ref_sys TO pg_database_owner;"
# Rows of the project's own coordinate systems (srids PostGIS leaves to users).
USER_SRIDS = (990001, 990002)
PLACES = {1: "POINT(2.35 48.85)", 2: "POINT(-0.12 51.5)"}
PLAN = {"geo_subset": {"subset": {"testapp.Author": {"where": "id > 0"}}}}


def postgis_package() -> str:
    major = int(psql("SHOW server_version_num")) // 10000
    return f"postgresql-{major}-postgis-3"


@pytest.fixture(scope="module")
def postgis() -> None:
    if psql("SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'") != "1":
        pytest.skip(
            f"PostGIS is not installed on the PostgreSQL server: apt-get install "
            f"{postgis_package()} (tests/run.sh does it when it runs as root)."
        )


def make_template(name: str, grants: str = TEMPLATE_GRANTS) -> None:
    """What an administrator does once (as a superuser)."""
    psql(f'CREATE DATABASE "{name}"')
    psql(EXTENSIONS + grants, name)
    psql(f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC')
    psql(f'ALTER DATABASE "{name}" IS_TEMPLATE true')


def drop_template(name: str) -> None:
    psql(f'ALTER DATABASE "{name}" IS_TEMPLATE false')
    psql(f'DROP DATABASE "{name}"')


@pytest.fixture(scope="module")
def template(postgis: None) -> Iterator[str]:
    make_template(TEMPLATE)
    yield TEMPLATE
    drop_template(TEMPLATE)


@pytest.fixture
def geo_live(postgis: None, target: str) -> Iterator[str]:
    """The restore target as a GeoDjango project's database: owned by the project's
    role, postgis and postgres_fdw installed by a superuser, a table of places and
    two coordinate systems of the project's own."""
    psql(f"DROP ROLE IF EXISTS {OWNER}")
    psql(f"CREATE ROLE {OWNER} LOGIN CREATEDB NOSUPERUSER")
    try:
        psql(f'ALTER DATABASE "{target}" OWNER TO {OWNER}')
        psql(EXTENSIONS, target)
        srids = ", ".join(
            f"({srid}, 'project', {srid}, 'LOCAL_CS[\"{srid}\"]', '+proj=longlat +datum=WGS84')"
            for srid in USER_SRIDS
        )
        points = ", ".join(f"({pk}, ST_GeomFromText('{wkt}', 4326))" for pk, wkt in PLACES.items())
        psql(
            f"INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) "
            f"VALUES {srids}; "
            "CREATE TABLE place (id int PRIMARY KEY, geom geometry(Point, 4326)); "
            f"INSERT INTO place VALUES {points}; "
            f"ALTER TABLE place OWNER TO {OWNER}; "
            # As in a database the owner restored before: pgclone's tables are its own
            # (the swap copies the job history into the new database).
            f"ALTER TABLE pgclone_job OWNER TO {OWNER}; "
            f"ALTER TABLE pgclone_jobstep OWNER TO {OWNER}",
            target,
        )
        yield target
    finally:
        drop_target_databases()  # the role owns them
        psql(f"DROP OWNED BY {OWNER} CASCADE")
        psql(f"DROP ROLE IF EXISTS {OWNER}")


@pytest.fixture(scope="module")
def geo_worker(
    template: str, test_database_name: str, moto_server: str, tmp_path_factory: Any
) -> Iterator[Any]:
    """A worker that refuses superuser restores and copies temporary databases
    from the template (this process's settings have neither)."""
    queue = own_queue("geo")
    env = {
        "PGCLONE_TEST_QUEUE": queue,
        "PGCLONE_TEST_ALLOW_SUPERUSER": "0",
        "PGCLONE_TEST_TEMPLATE_DATABASE": template,
        "PGCLONE_TEST_DUMP_CONFIGS": json.dumps(PLAN),
    }
    log = tmp_path_factory.mktemp("geo-worker") / "worker.log"
    worker = start_worker(
        test_database_name, log, moto=moto_server, queue=queue, pool="solo", env=env
    )
    worker.queue = queue
    yield worker
    stop_worker(worker)


@pytest.fixture
def on_geo_worker(geo_worker: Any, settings: Any) -> Any:
    settings.PGCLONE_CELERY_QUEUE = geo_worker.queue
    settings.PGCLONE_DUMP_CONFIGS = {**settings.PGCLONE_DUMP_CONFIGS, **PLAN}
    return geo_worker


def places(database: str) -> dict[int, str]:
    rows = psql("SELECT id || ' ' || ST_AsText(geom) FROM place ORDER BY id", database)
    return {int(pk): wkt for pk, wkt in (row.split(" ", 1) for row in rows.splitlines())}


def user_srids(database: str) -> list[int]:
    found = psql("SELECT srid FROM spatial_ref_sys WHERE srid >= 990000 ORDER BY srid", database)
    return [int(srid) for srid in found.split()]


def dump_and_change(live: str, config: str | None = None) -> str:
    """A dump of the live database (made as a superuser: the owner can't read every
    table of this copy of the test database); then the live data changes."""
    job = api.dump(database="target", config=config, inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    psql("DELETE FROM place WHERE id = 2; DELETE FROM spatial_ref_sys WHERE srid = 990002", live)
    return job.dump_key


def ended(job: Job) -> Job:
    return wait_for(
        lambda: Job.objects.filter(pk=job.pk, status__in=["succeeded", "failed"]).first(),
        timeout=180,
        what=f"the {job.kind} job to end",
    )


def assert_restored(database: str) -> None:
    assert places(database) == PLACES
    assert user_srids(database) == list(USER_SRIDS)
    # PostGIS works in it, as the owner's code will use it.
    assert psql("SELECT ST_SRID(geom) FROM place WHERE id = 1", database) == "4326"
    assert psql("SELECT extname FROM pg_extension WHERE extname LIKE 'postgis%'", database) == (
        "postgis"
    )


def test_a_postgis_database_restores_as_its_owner_from_the_template(
    geo_live, on_geo_worker, local_location
):
    key = dump_and_change(geo_live)

    job = ended(api.restore(key, database="geo", pre_swap_hooks=["migrate"]))

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert_restored(geo_live)
    owner = f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{geo_live}'"
    assert psql(owner) == OWNER
    assert pgclone_databases() == []


def test_a_reversible_restore_streamed_from_s3_and_its_undo(geo_live, on_geo_worker, s3_location):
    key = dump_and_change(geo_live)

    job = ended(api.restore(key, database="geo", reversible=True, pre_swap_hooks=[]))

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert "COPY of the tables in " in job.steps.get(name="restore_temp").message
    assert_restored(geo_live)
    previous = databases.copy_name(geo_live, "previous")
    assert places(previous) == {1: PLACES[1]}  # what was live before

    undo = ended(api.restore(":previous", database="geo", pre_swap_hooks=[]))

    assert undo.status == Job.Status.SUCCEEDED, undo.error
    assert places(geo_live) == {1: PLACES[1]} and user_srids(geo_live) == [USER_SRIDS[0]]
    assert pgclone_databases() == []


def test_a_trial_restore_passes(geo_live, on_geo_worker, local_location):
    key = dump_and_change(geo_live)

    job = ended(api.trial_restore(key, database="geo", pre_swap_hooks=[]))

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["trial"] == "passed" and job.result["comparison"]["passed"]
    assert places(geo_live) == {1: PLACES[1]}  # a trial replaces nothing
    assert pgclone_databases() == []


@pytest.mark.parametrize("location", ["local_location", "s3_location"])
def test_a_planned_dump_of_it_restores_from_local_storage_and_s3(
    geo_live, on_geo_worker, location, request
):
    request.getfixturevalue(location)
    key = dump_and_change(geo_live, config="geo_subset")

    job = ended(api.restore(key, database="geo", pre_swap_hooks=[]))

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["manifest"]["format"] == containers.FORMAT
    assert_restored(geo_live)
    assert pgclone_databases() == []


def test_without_the_setting_the_restore_names_the_extensions_and_the_setting(
    geo_live, postgis, local_location, settings
):
    settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = False
    settings.PGCLONE_TEMPLATE_DATABASE = None
    key = dump_and_change(geo_live)

    job = api.restore(key, database="geo", pre_swap_hooks=[], inline=True)

    assert job.status == Job.Status.FAILED
    assert job.steps.get(name="restore_temp").status == "failed"
    assert "extension(s) postgis, postgres_fdw, which only a superuser can create" in job.error
    assert "PGCLONE_TEMPLATE_DATABASE" in job.error
    assert places(geo_live) == {1: PLACES[1]} and pgclone_databases() == []


def test_a_template_without_the_grant_names_the_table_and_the_grant(
    geo_live, postgis, local_location, settings
):
    bare = f"pgclone_geo_bare_{SESSION}"
    make_template(bare, grants="")
    try:
        settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = False
        settings.PGCLONE_TEMPLATE_DATABASE = {"geo": bare}
        key = dump_and_change(geo_live)

        job = api.restore(key, database="geo", pre_swap_hooks=[], inline=True)
    finally:
        drop_template(bare)

    assert job.status == Job.Status.FAILED
    assert "rows of public.spatial_ref_sys, configuration of the extension(s) postgis" in (
        job.error
    )
    assert "GRANT INSERT ON public.spatial_ref_sys TO pg_database_owner" in job.error
    assert places(geo_live) == {1: PLACES[1]} and pgclone_databases() == []


def test_the_system_check_and_the_restore_refuse_an_unfit_template(
    geo_live, postgis, local_location, settings
):
    settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = False
    odd = f"pgclone_geo_odd_{SESSION}"
    psql(f"CREATE DATABASE \"{odd}\" TEMPLATE template0 ENCODING 'SQL_ASCII' LOCALE 'C'")
    try:
        settings.PGCLONE_TEMPLATE_DATABASE = {"geo": odd}
        found = [m for m in checks.run_checks(databases=["geo"]) if m.id == "pgclone.E013"]
        key = dump_and_change(geo_live)
        job = api.restore(key, database="geo", pre_swap_hooks=[], inline=True)
        settings.PGCLONE_TEMPLATE_DATABASE = {"geo": "pgclone_geo_no_such_template"}
        missing = [m.msg for m in checks.run_checks(databases=["geo"]) if m.id == "pgclone.E013"]
    finally:
        psql(f'DROP DATABASE "{odd}"')

    assert [m.msg.split(": ", 1)[0] for m in found] == ["geo", "geo"]
    assert "is not marked as a template" in found[0].msg
    assert "encoding 'SQL_ASCII'" in found[1].msg and "LC_COLLATE 'C'" in found[1].msg
    assert job.status == Job.Status.FAILED and "is not marked as a template" in job.error
    assert job.steps.get(name="fetch").status == "failed"  # before anything is created
    assert places(geo_live) == {1: PLACES[1]} and pgclone_databases() == []
    assert len(missing) == 1 and "does not exist" in missing[0]


def test_a_template_made_by_another_role_with_createdb_is_refused(
    geo_live, postgis, local_location, settings
):
    """A tenant of the server (CREATEDB only) makes a database of the template's
    name before the administrator, with a table of its own, and marks it a
    template: restores would start from what it put there."""
    tenant, planted = f"pgclone_geo_tenant_{SESSION}", f"pgclone_geo_planted_{SESSION}"
    psql(f"CREATE ROLE {tenant} LOGIN CREATEDB NOSUPERUSER")
    try:
        for statement in (
            f'CREATE DATABASE "{planted}"',
            f'ALTER DATABASE "{planted}" IS_TEMPLATE true',
        ):
            psql_as(tenant, statement)
        psql_as(tenant, "CREATE TABLE place (id int PRIMARY KEY)", planted)
        settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = False
        settings.PGCLONE_TEMPLATE_DATABASE = planted
        key = dump_and_change(geo_live)

        job = api.restore(key, database="geo", pre_swap_hooks=[], inline=True)
    finally:
        psql(f'ALTER DATABASE "{planted}" IS_TEMPLATE false')
        psql(f'DROP DATABASE IF EXISTS "{planted}"')
        psql(f"DROP ROLE {tenant}")

    assert job.status == Job.Status.FAILED
    assert f"is owned by '{tenant}', neither a superuser nor the live database's owner" in job.error
    assert job.steps.get(name="fetch").status == "failed"
    assert places(geo_live) == {1: PLACES[1]} and pgclone_databases() == []


def psql_as(role: str, statement: str, database: str = "postgres") -> None:
    connection = pg.driver.connect(host="127.0.0.1", user=role, dbname=database)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()
