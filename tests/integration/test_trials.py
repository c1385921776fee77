"""Trial restores (``verify --restore``) and ``health``, through a real worker."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import zstandard

from pgclone import api
from pgclone.models import Job
from pgclone.storage import keys
from pgclone.storage.base import TRIAL_SUFFIX
from tests.helpers import (
    copy_dump,
    make_dump,
    pgclone_databases,
    psql,
    restore_into,
    scratch_database,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def trial_record(location: str, key: str) -> dict:
    return json.loads((Path(location) / f"{key}{TRIAL_SUFFIX}").read_text())


@pytest.mark.matrix
def test_a_good_dump_is_proven_to_restore(celery_worker, pgclone_cli, local_location):
    key = make_dump("ann", local_location)
    recorded = {
        (t["schema"], t["name"]): (t["rows"], t["exact"])
        for t in api.dump_infos()[0].manifest["tables"]
    }
    assert recorded["public", "testapp_author"] == (1, True)
    assert recorded["public", "testapp_book"] == (1, True)
    assert recorded["public", "pgclone_job"] == (0, True)  # its data is never dumped

    result = pgclone_cli("verify", key, "--restore", "--wait", location=local_location)

    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("fetch", "restore_temp", "compare", "pre_swap", "record"):
        assert f"{step}: done in" in result.stdout
    assert "Ran migrate" in result.stdout  # the restore config's hooks ran on the copy
    assert "Trial restore succeeded" in result.stdout
    assert "as the dump recorded" in result.stdout
    job = Job.objects.get(kind=Job.Kind.VERIFY)
    assert job.status == Job.Status.SUCCEEDED and job.dump_key == key
    assert job.database_name == keys.parse_key(key).database
    assert job.result["comparison"]["passed"] and job.result["trial"] == "passed"
    record = trial_record(local_location, key)
    assert record["outcome"] == "passed" and record["job_id"] == str(job.pk)
    assert pgclone_databases() == []  # the scratch database is gone
    # Beside the dump, never a dump itself.
    listed = pgclone_cli("ls", location=local_location)
    assert listed.stdout.split() == [key]
    long = pgclone_cli("ls", "--long", location=local_location)
    assert long.stdout.split("\n")[0].split() == ["KEY", "SIZE", "AGE", "CONFIG", "FLAGS", "TRIAL"]
    assert re.search(r"  passed-\d+s-ago$", long.stdout, re.M)


def rebuild_without_rows(location: str, key: str, table: str) -> None:
    """Replace a stored dump with a real archive of the same database minus one
    table's rows, and rewrite its manifest's sizes and digest to match (its
    record of the tables is what was dumped): a dump damaged where no checksum
    can see it."""
    path = Path(location) / key
    with scratch_database() as name:
        restore_into(path.read_bytes(), name)
        psql(f"TRUNCATE {table}", name)
        archive = subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-Fc", "-Z0", "-d", name],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
    data = zstandard.ZstdCompressor(write_checksum=True).compress(archive)
    path.write_bytes(data)
    manifest_path = Path(location) / f"{key}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(size=len(data), raw_size=len(archive), sha256=hashlib.sha256(data).hexdigest())
    manifest["format"] = "postgresql-custom"  # one pg_dump archive, as dumps were
    manifest_path.write_text(json.dumps(manifest))


def test_a_dump_missing_rows_fails_its_trial_and_health(celery_worker, pgclone_cli, local_location):
    key = make_dump("bob", local_location)
    rebuild_without_rows(local_location, key, "testapp_secret")
    # Its checksum and archive are sound: only restoring it shows what is missing.
    assert pgclone_cli("verify", key, location=local_location).returncode == 0

    result = pgclone_cli("verify", key, "--restore", "--wait", location=local_location)

    assert result.returncode == 1
    assert "failed in step compare" in result.stderr
    assert "table public.testapp_secret has 0 rows, the dump recorded 1" in result.stderr
    record = trial_record(local_location, key)
    assert record["outcome"] == "failed" and record["step"] == "compare"
    assert "testapp_secret has 0 rows" in record["error"]
    assert pgclone_databases() == []
    long = pgclone_cli("ls", "--long", location=local_location)
    assert re.search(r"  FAILED-\d+s-ago$", long.stdout, re.M)
    health = pgclone_cli("health", location=local_location)
    assert health.returncode == 1
    assert "trial restore FAILED" in health.stdout and "testapp_secret has 0 rows" in health.stdout


def test_a_trial_of_a_damaged_dump_fails_before_creating_anything(local_location):
    key = make_dump("cy", local_location)
    path = Path(local_location) / key
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # same size, other bytes

    job = api.trial_restore(key, inline=True)

    assert job.status == Job.Status.FAILED and "The dump is damaged" in job.error
    failed = job.steps.get(status="failed").name
    # Checked as it is unpacked for the parallel restore, before the database is made.
    assert failed in ("fetch", "restore_temp")
    record = trial_record(local_location, key)
    assert record["outcome"] == "failed" and record["step"] == failed
    assert pgclone_databases() == []


def test_a_database_is_not_a_dump_to_trial(local_location):
    with pytest.raises(Exception, match="is a database, not a dump"):
        api.trial_restore(":previous")
    assert Job.objects.get(kind=Job.Kind.VERIFY).status == Job.Status.FAILED


def test_verify_latest_tries_the_newest_dump_of_each_database(celery_worker, local_location):
    old = make_dump("dee", local_location)
    newest = make_dump("eve", local_location)
    other = copy_dump(local_location, old, "pgclone_other_db", keys.parse_key(old).timestamp)

    from pgclone import tasks

    started = tasks.verify_latest.apply().get()  # what beat runs; the jobs go to the worker

    assert len(started) == 2
    jobs = wait_for(
        lambda: (found := list(Job.objects.filter(pk__in=started))) and all(
            job.is_finished for job in found) and found,
        timeout=120, what="the trial restores to end",
    )  # fmt: skip
    assert {job.dump_key: job.status for job in jobs} == {
        newest: Job.Status.SUCCEEDED,
        other: Job.Status.SUCCEEDED,
    }
    assert {job.requested_by for job in jobs} == {"celery beat"}
    assert not (Path(local_location) / f"{old}{TRIAL_SUFFIX}").exists()


def test_health_says_when_the_newest_dump_is_too_old(pgclone_cli, local_location):
    empty = pgclone_cli("health", location=local_location)
    assert empty.returncode == 1 and "No dumps in storage" in empty.stderr

    made = make_dump("fay", local_location)
    database = keys.parse_key(made).database
    three_days_ago = keys.format_timestamp(dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    old = copy_dump(local_location, made, "pgclone_old_app", three_days_ago)

    stale = pgclone_cli("health", location=local_location)
    assert stale.returncode == 1, stale.stdout + stale.stderr
    lines = stale.stdout.splitlines()
    assert f"FAIL pgclone_old_app: newest dump 3d old ({old})" in lines[0]
    assert "older than 26h" in lines[0] and "never restored in a trial" in lines[0]
    assert re.match(rf"ok   {database}: newest dump \d+s old \({re.escape(made)}\)", lines[1])
    assert "Unhealthy: pgclone_old_app." in stale.stderr

    assert pgclone_cli("health", "--max-age", "4d", location=local_location).returncode == 0
    fresh = pgclone_cli("health", database, "--max-age", "10m", location=local_location)
    assert fresh.returncode == 0 and len(fresh.stdout.splitlines()) == 1
    missing = pgclone_cli("health", "pgclone_nobody", location=local_location)
    assert missing.returncode == 1 and "no complete dump in storage" in missing.stdout
    bad = pgclone_cli("health", "--max-age", "soon", location=local_location)
    assert bad.returncode == 2 and "write a positive number and a unit" in bad.stderr


def test_verify_latest_names_the_newest_dump_of_each_database(pgclone_cli, local_location):
    older = make_dump("gil", local_location)
    newest = make_dump("hal", local_location)
    other = copy_dump(local_location, older, "pgclone_other_db", keys.parse_key(older).timestamp)

    every = pgclone_cli("verify", "--latest", location=local_location)
    assert every.returncode == 0, every.stderr
    assert [line.split(" is sound")[0] for line in every.stdout.splitlines()] == [other, newest]
    one = pgclone_cli("verify", "--latest", "pgclone_other_db", location=local_location)
    assert one.stdout.startswith(f"{other} is sound")
    by_name = pgclone_cli("verify", keys.parse_key(newest).database, location=local_location)
    assert by_name.stdout.startswith(f"{newest} is sound")
    neither = pgclone_cli("verify", location=local_location)
    assert neither.returncode == 2 and "Name one dump" in neither.stderr
    missing = pgclone_cli("verify", "--latest", "pgclone_nobody", location=local_location)
    assert (
        missing.returncode == 1
        and "No complete dump of database 'pgclone_nobody'" in missing.stderr
    )


def test_a_cancelled_trial_leaves_nothing_and_no_verdict(
    celery_worker, pgclone_cli, local_location, tmp_path
):
    key = make_dump("ida", local_location)
    release = tmp_path / "release"
    job = api.trial_restore(key, pre_swap_hooks=[f"testapp_wait {release}"])
    wait_for(lambda: Path(f"{release}.started").exists(), what="the hook to start")
    assert len(pgclone_databases()) == 1  # the scratch database

    result = pgclone_cli("cancel", str(job.pk), location=local_location)
    assert result.returncode == 0, result.stderr
    release.touch()

    wait_for(
        lambda: Job.objects.get(pk=job.pk).steps.get(name="pre_swap").status == "failed",
        what="the trial to stop",
    )
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert job.steps.get(name="record").status == "skipped"
    assert pgclone_databases() == []
    # Stopping a trial says nothing about the dump: no record beside it.
    assert not (Path(local_location) / f"{key}{TRIAL_SUFFIX}").exists()


def test_a_trial_record_is_signed_when_signing_is_on(local_location, settings):
    settings.PGCLONE_SIGNING_KEY = "s" * 40
    key = make_dump("jo", local_location)

    assert api.trial_restore(key, inline=True).status == Job.Status.SUCCEEDED

    record = trial_record(local_location, key)
    assert record["outcome"] == "passed" and len(record["signature"]) == 64
    assert api.health()[0].healthy
    # Someone who can write to the storage but has no key can't make a failure pass.
    record["outcome"] = "passed"
    record["at"] = dt.datetime.now(dt.UTC).isoformat()
    (Path(local_location) / f"{key}{TRIAL_SUFFIX}").write_text(json.dumps(record))
    (verdict,) = api.health()
    assert not verdict.healthy and "its signature does not match" in verdict.trial.problem
