"""Bad input gets a clear message and the right exit status, never a traceback.

Every case runs against the real services: the command in a process of its
own, a real worker, real storage.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from pgclone import api
from pgclone.exceptions import InvalidInput
from pgclone.models import Job
from tests.helpers import (
    ROOT,
    clone_database,
    fingerprint,
    make_dump,
    pgclone_databases,
    psql,
    wait_for,
)
from tests.integration.test_admin import DUMPS, client_for, staff
from tests.processes import own_queue, start_worker, stop_worker, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

LONG = "x" * 300


def assert_clean_exit(result: subprocess.CompletedProcess, code: int, *messages: str) -> None:
    """The exit status, the messages on stderr, and no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    for message in messages:
        assert message in result.stderr, output
    assert "Traceback" not in output


# A corrupt manifest -------------------------------------------------------------------


def damage_manifest(location: str, key: str, text: str) -> None:
    (Path(location) / f"{key}.json").write_text(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"size": 12', "it is not JSON"),
        ("[1, 2]", "it holds a JSON list, not an object"),
        ('{"size": 12}', "it has no sha256"),
        ('{"sha256": "ab"}', "it has no size"),
        ('{"size": "12", "sha256": "ab"}', "its size '12' is not a number of bytes"),
    ],
)
def test_verify_of_a_dump_with_a_corrupt_manifest(pgclone_cli, local_location, text, problem):
    key = make_dump("damaged", local_location)
    damage_manifest(local_location, key, text)

    result = pgclone_cli("verify", key, location=local_location)

    assert_clean_exit(result, 1, f"The manifest of dump {key} is damaged: {problem}")


def test_restore_of_a_dump_with_a_corrupt_manifest(pgclone_cli, local_location):
    key = make_dump("damaged", local_location)
    damage_manifest(local_location, key, '{"size": 12')
    Job.objects.all().delete()

    result = pgclone_cli("restore", key, "--database", "target", location=local_location)

    assert_clean_exit(result, 1, f"The manifest of dump {key} is damaged: it is not JSON")
    job = Job.objects.get()
    assert job.status == Job.Status.FAILED and "is damaged: it is not JSON" in job.error


def test_dumps_page_lists_a_damaged_dump_without_offering_its_restore(local_location):
    good = make_dump("good", local_location)
    damaged = make_dump("damaged", local_location)
    damage_manifest(local_location, damaged, '{"size": 12')

    page = client_for(staff("restorer", "restore_database")).get(DUMPS)

    assert page.status_code == 200
    html = page.content.decode()
    assert 'class="pgclone-damaged"' in html and "Damaged:" in html
    assert f"The manifest of dump {damaged} is damaged: it is not JSON" in html
    assert f"?key={quote(good)}" in html  # as the template's urlencode writes it
    assert f"?key={quote(damaged)}" not in html
    assert html.count("Restore this dump") == 1


DEEP = "[" * 200_000  # 200 KB that json.loads can't parse without RecursionError


@pytest.fixture
def deep_records(local_location: str) -> tuple[str, str]:
    """As someone who can write to the storage: the newest dump's manifest, and
    an older one's trial record, nested 200 000 deep."""
    tried = make_dump("tried", local_location)
    (Path(local_location) / f"{tried}.trial.json").write_text(DEEP)
    deep = make_dump("deep", local_location)
    damage_manifest(local_location, deep, DEEP)
    return deep, tried


TOO_DEEP = "is damaged: it is nested too deeply to be read"


def test_ls_long_reports_records_nested_too_deep(pgclone_cli, local_location, deep_records):
    deep, tried = deep_records

    result = pgclone_cli("ls", "--long", location=local_location)

    assert_clean_exit(
        result,
        0,
        f"The manifest of dump {deep} {TOO_DEEP}",
        f"The trial record of dump {tried} is damaged: the record is nested too deeply",
    )
    (row,) = [line for line in result.stdout.splitlines() if line.startswith(deep)]
    assert "DAMAGED" in row.split()


def test_health_reports_a_trial_record_nested_too_deep(pgclone_cli, local_location, deep_records):
    _, tried = deep_records

    result = pgclone_cli("health", location=local_location)

    # The newest complete dump counts; its trial record proves nothing.
    assert_clean_exit(result, 1, "Unhealthy")
    assert f"FAIL {tried.split('/')[0]}: newest dump" in result.stdout
    assert "its record can't be read: the record is nested too deeply" in result.stdout


def test_verify_latest_reports_a_manifest_nested_too_deep(
    pgclone_cli, local_location, deep_records
):
    deep, _ = deep_records

    result = pgclone_cli("verify", "--latest", location=local_location)

    assert_clean_exit(result, 1, f"The manifest of dump {deep} {TOO_DEEP}")


def test_dumps_page_lists_a_manifest_nested_too_deep_as_damaged(local_location, deep_records):
    deep, _ = deep_records

    page = client_for(staff("restorer", "restore_database")).get(DUMPS)

    assert page.status_code == 200
    html = page.content.decode()
    assert f"The manifest of dump {deep} {TOO_DEEP}" in html
    assert f"?key={quote(deep)}" not in html


def test_a_manifest_larger_than_16_mib_is_damaged_unread(pgclone_cli, local_location):
    key = make_dump("huge", local_location)
    damage_manifest(local_location, key, '{"size": 1, "pad": "' + "x" * (16 * 2**20) + '"}')

    result = pgclone_cli("verify", key, location=local_location)

    assert_clean_exit(
        result, 1, f"The manifest of dump {key} is damaged: it is larger than 16.0 MiB"
    )


# Names and keys that are too long -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", f"{LONG}/20261123T230321.482913Z.default.dump"], "at most 63 bytes"),
        (["restore", f"shop/20261123T230321.482913Z.{LONG}.dump"], "at most 100"),
        (["restore", LONG], "at most 63 bytes"),
        (["ls", LONG], "at most 63 bytes"),
        (["prune", LONG], "at most 63 bytes"),
        (["dump", "--config", LONG], "at most 100"),
        (["restore", "shop", "--config", LONG], "at most 100"),
    ],
)
def test_names_too_long_are_refused_as_bad_usage(pgclone_cli, local_location, args, message):
    if args[0] == "restore":
        args = [*args, "--database", "target"]

    result = pgclone_cli(*args, location=local_location)

    assert_clean_exit(result, 2, message)
    assert "x" * 41 not in result.stderr  # the name is cut short in the message
    assert not Job.objects.exclude(status=Job.Status.FAILED).exists()
    assert not Path(local_location).exists()  # nothing was created or looked up


# NUL characters through the Python API ----------------------------------------------------


@pytest.mark.parametrize(
    ("start", "kwargs", "named"),
    [
        (api.restore, {"target": "a\x00b"}, "target="),
        (api.restore, {"target": "shop", "pre_swap_hooks": ["migrate\x00"]}, "pre_swap_hooks="),
        (api.dump, {"pre_dump_hooks": ["x\x00"]}, "pre_dump_hooks="),
        (api.dump, {"exclude_models": ["auth.User", "a\x00"]}, "exclude_models="),
        (api.dump, {"config": "nightly\x00"}, "config="),
        (api.dump, {"requested_by": "me\x00"}, "requested_by="),
    ],
)
def test_nul_characters_are_refused_before_the_job_is_written(local_location, start, kwargs, named):
    with pytest.raises(InvalidInput) as error:
        start(**kwargs)
    assert named in str(error.value) and "NUL character" in str(error.value)
    assert not Job.objects.exists()


# prune outside the storage ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["/etc", "..", "../x"])
def test_prune_of_a_name_outside_the_storage_is_refused(pgclone_cli, local_location, name):
    make_dump("kept", local_location)

    result = pgclone_cli("prune", name, location=local_location)

    assert_clean_exit(result, 2, f"Database name {name!r} can't be used in a dump key")


# Storage locations ------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["dump"], ["restore", "shop", "--database", "target"]])
def test_an_empty_storage_location_is_refused(pgclone_cli, command):
    before = sorted(path.name for path in (ROOT / "tests").iterdir())

    result = pgclone_cli(*command, location="")

    assert_clean_exit(result, 2, "pgclone.E002", "PGCLONE_STORAGE_LOCATION is ''")
    assert "s3://BUCKET/PREFIX" in result.stderr
    assert sorted(path.name for path in (ROOT / "tests").iterdir()) == before
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("s3://Bad_Bucket!/x", "bucket names have only letters, digits, '.', '-' and '_'"),
        ("s3://ab", "bucket names have at least 3 characters"),
        ("s3:///x", "names no bucket"),
    ],
)
@pytest.mark.parametrize("command", [["ls"], ["dump"]])
def test_malformed_s3_locations_are_refused(pgclone_cli, location, problem, command):
    result = pgclone_cli(*command, location=location)

    assert_clean_exit(result, 2, "pgclone.E002", problem, "write s3://BUCKET/PREFIX")
    assert not Job.objects.exists()


# A project whose Celery app is never loaded ----------------------------------------------


def run_without_celery_app(*args: str, database: str, location: str) -> subprocess.CompletedProcess:
    """``manage.py ARGS`` in a project with the test settings but no Celery app: its
    settings module is imported by its own name, so the tests package (whose
    ``__init__`` loads the Celery app) never is."""
    env = worker_env(database, PGCLONE_TEST_STORAGE=location)
    env.update(PYTHONPATH=str(ROOT / "tests"), DJANGO_SETTINGS_MODULE="settings_no_celery")
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_check_reports_a_project_without_its_celery_app(test_database_name, local_location):
    result = run_without_celery_app("check", database=test_database_name, location=local_location)

    # A warning: the project's other commands keep working.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(pgclone.W013) No Celery app is loaded" in result.stderr
    assert "in the project package's __init__.py" in result.stderr


def test_jobs_are_not_sent_without_the_celery_app(test_database_name, local_location):
    def run(*args: str) -> subprocess.CompletedProcess:
        return run_without_celery_app(
            "pgclone", *args, database=test_database_name, location=local_location
        )

    # The job is refused where it would be sent.
    result = run("dump")
    assert_clean_exit(result, 2, "No Celery app is loaded", "__init__.py", "--inline")
    job = Job.objects.get()
    assert job.status == Job.Status.FAILED and "No Celery app is loaded" in job.error
    assert "--inline" in job.error

    inline = run("dump", "--inline")
    assert_clean_exit(inline, 0)
    assert "Dump succeeded" in inline.stdout


# A worker that uses other DATABASES ----------------------------------------------------


@pytest.fixture
def other_database(test_database_name):
    """A migrated database that is not the one this session's jobs are in."""
    name = f"pgclone_scratch_{uuid.uuid4().hex[:10]}"
    try:
        clone_database(test_database_name, name)
        yield name
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_worker_on_other_databases_says_so_in_one_line(
    settings, local_location, other_database, moto_server, tmp_path
):
    queue = own_queue("other-db")
    settings.PGCLONE_CELERY_QUEUE = queue
    password = "pgclone-other-Pw-0815"  # trust auth ignores it; it must show nowhere
    worker = start_worker(
        other_database,
        tmp_path / "worker.log",
        moto=moto_server,
        queue=queue,
        env={"PGCLONE_TEST_PASSWORD": password},
    )
    try:
        job = api.dump()
        line = f"pre_dump step of job {job.pk} ignored"
        wait_for(lambda: line in worker.output(), timeout=60, what="the worker's error line")
    finally:
        stop_worker(worker)

    output = worker.output()
    assert output.count(line) == 1, output
    logged = next(text for text in output.splitlines() if line in text)
    assert "ERROR" in logged
    assert f"NAME '{other_database}', HOST '127.0.0.1', PORT '5432'" in logged
    assert "must use the same DATABASES" in logged
    assert "Traceback" not in output and "DoesNotExist" not in output
    assert password not in output
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING  # the worker could not touch it


# Bad values of the jobs settings ------------------------------------------------------


def test_a_worker_with_a_bad_dump_jobs_value_fails_the_dump_saying_what_to_write(
    settings, local_location, test_database_name, moto_server, tmp_path
):
    queue = own_queue("bad-jobs")
    settings.PGCLONE_CELERY_QUEUE = queue
    worker = start_worker(
        test_database_name,
        tmp_path / "worker.log",
        moto=moto_server,
        queue=queue,
        env={"PGCLONE_TEST_DUMP_JOBS": "0"},
    )
    try:
        job = api.dump()
        wait_for(
            lambda: Job.objects.get(pk=job.pk).is_finished, timeout=120, what="the dump to end"
        )
        output = worker.output()  # before stopping it: a task cut short logs its own
    finally:
        stop_worker(worker)

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error.startswith(
        "PGCLONE_DUMP_JOBS is 0: a job needs at least 1 session. "
        "Set PGCLONE_DUMP_JOBS to a whole number from 1 to 64"
    ), job.error
    assert "Traceback" not in output, output[-3000:]
    assert not list(Path(local_location).rglob("*.*")), "the dump left files behind"


def test_a_restore_whose_worker_reads_a_bad_restore_jobs_value_fails_saying_so(
    local_location, target, settings
):
    key = make_dump("never", local_location)
    before = fingerprint(target)

    def bad_value(job):
        settings.PGCLONE_RESTORE_JOBS = True  # as if the worker's settings said so

    job = api.restore(key, database="target", inline=True, on_start=bad_value)

    assert job.status == Job.Status.FAILED
    assert job.error.startswith(
        "PGCLONE_RESTORE_JOBS is True (a bool), not a whole number of sessions. "
        "Set PGCLONE_RESTORE_JOBS to a whole number from 1 to 64"
    ), job.error
    assert fingerprint(target) == before
    assert pgclone_databases() == []


def test_a_command_with_a_bad_restore_jobs_value_refuses_to_start(pgclone_cli, local_location):
    Job.objects.all().delete()

    result = pgclone_cli("dump", location=local_location, env={"PGCLONE_TEST_RESTORE_JOBS": '"4"'})

    assert result.returncode == 2, result.stdout + result.stderr  # refused: nothing ran
    assert "(pgclone.E015) PGCLONE_RESTORE_JOBS is '4' (a str), not a whole number" in (
        result.stderr
    )
    assert "HINT: Set PGCLONE_RESTORE_JOBS to a whole number from 1 to 64" in result.stderr
    assert not Job.objects.exists()
