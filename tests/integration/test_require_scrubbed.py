"""An environment that takes only scrubbed data (PGCLONE_REQUIRE_SCRUBBED, and a
restore config's require_scrubbed): what the command, a trial restore, the admin
and the worker refuse, and what they still take, on the real services.

The worker and the commands here sign manifests and allow unsigned ones
(PGCLONE_ALLOW_UNSIGNED): where scrubbed data is required, only a signed
manifest counts, whatever that setting says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from pgclone import api
from pgclone.models import Job
from pgclone.storage import keys, storage_for
from tests.helpers import (
    TARGET,
    authors,
    fingerprint,
    make_dump,
    pgclone_databases,
    psql,
    scratch_database,
    wait_for,
)
from tests.integration.test_planned import SAFE_CONFIG
from tests.integration.test_subset import shop  # noqa: F401 (fixture)
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "pgclone-test-signing-secret-scrubbed-only"
DUMP_CONFIGS = {"safe": SAFE_CONFIG}
RESTORE_CONFIGS = {
    "fast": {"pre_swap_hooks": []},
    "scrubbed_only": {"pre_swap_hooks": [], "require_scrubbed": True},
}
# What the source's customers hold, and a scrubbed restore never brings.
REAL_EMAILS = "SELECT count(*) FROM testapp_customer WHERE email LIKE '%real.example'"


@pytest.fixture(scope="module")
def strict_worker(tmp_path_factory, test_database_name, moto_server) -> Iterator[Any]:
    """A worker that takes only scrubbed dumps, signs manifests and allows unsigned ones;
    ``worker.env`` runs ``manage.py pgclone`` with the same settings."""
    queue = own_queue("scrubbed-only")
    env = {
        "PGCLONE_TEST_QUEUE": queue,
        "PGCLONE_TEST_DUMP_CONFIGS": json.dumps(DUMP_CONFIGS),
        "PGCLONE_TEST_RESTORE_CONFIGS": json.dumps(RESTORE_CONFIGS),
        "PGCLONE_TEST_SIGNING_KEY": SECRET,
        "PGCLONE_TEST_ALLOW_UNSIGNED": "1",
        "PGCLONE_TEST_REQUIRE_SCRUBBED": "1",
    }
    log = tmp_path_factory.mktemp("scrubbed-only-worker") / "worker.log"
    worker = start_worker(test_database_name, log, moto=moto_server, queue=queue, env=env)
    worker.env = env
    worker.queue = queue
    yield worker
    stop_worker(worker)


@pytest.fixture
def signed(settings, local_location, shop) -> dict[str, str]:  # noqa: F811 (the fixture above)
    """This process signs as the worker does; a plain dump and a scrubbed one of the shop."""
    settings.PGCLONE_SIGNING_KEY = SECRET
    settings.PGCLONE_ALLOW_UNSIGNED = True
    settings.PGCLONE_DUMP_CONFIGS = DUMP_CONFIGS
    settings.PGCLONE_RESTORE_CONFIGS = RESTORE_CONFIGS
    plain = make_dump("plain-ann", local_location)
    safe = api.dump(config="safe", inline=True)
    assert safe.status == Job.Status.SUCCEEDED, safe.error
    return {"plain": plain, "safe": safe.dump_key}


def cli(pgclone_cli, worker, location: str, *args: str, **env: str):
    return pgclone_cli(*args, location=location, env={**worker.env, **env})


def restore(pgclone_cli, worker, location: str, source: str, *args: str, **env: str):
    return cli(pgclone_cli, worker, location, "restore", source, "--database", "target",
               "--wait", "--config", "fast", *args, **env)  # fmt: skip


def refused_before_queueing(kind: str) -> Job:
    """The one job of ``kind``: failed when asked for, never sent to a worker."""
    (job,) = Job.objects.filter(kind=kind)
    assert job.status == Job.Status.FAILED and job.task_id == ""
    assert set(job.steps.values_list("status", flat=True)) == {"skipped"}
    return job


def edit_manifest(location: str, key: str, *, keep_signature: bool) -> None:
    """What a storage writer without the signing key can do: say "scrubbed" in a
    manifest (with the plan a scrubbed dump records), with its old signature or none."""
    path = Path(location) / f"{key}.json"
    manifest = json.loads(path.read_text())
    manifest["scrubbed"] = True
    manifest["plan"] = {"tables": ["public.testapp_customer"]}
    if not keep_signature:
        del manifest["signature"], manifest["signing_key_id"]
    path.write_text(json.dumps(manifest))


def assert_scrubbed_restored(database: str) -> None:
    assert int(psql("SELECT count(*) FROM testapp_customer", database)) > 0
    assert psql(REAL_EMAILS, database) == "0"


def test_the_command_restores_a_signed_scrubbed_dump_and_refuses_a_plain_one(
    strict_worker, pgclone_cli, target, signed, local_location
):
    before = fingerprint(target)

    refused = restore(pgclone_cli, strict_worker, local_location, signed["plain"])

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"Dump {signed['plain']} is not scrubbed" in refused.stderr
    assert "PGCLONE_REQUIRE_SCRUBBED is on here" in refused.stderr
    refused_before_queueing(Job.Kind.RESTORE)
    assert fingerprint(target) == before and authors(target) == ["target-only"]

    taken = restore(pgclone_cli, strict_worker, local_location, signed["safe"])

    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert_scrubbed_restored(target)
    assert pgclone_databases() == []


def test_a_trial_restore_takes_only_a_scrubbed_dump(
    strict_worker, pgclone_cli, signed, local_location
):
    refused = cli(pgclone_cli, strict_worker, local_location,
                  "verify", signed["plain"], "--restore", "--wait")  # fmt: skip

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"Dump {signed['plain']} is not scrubbed" in refused.stderr
    refused_before_queueing(Job.Kind.VERIFY)
    assert storage_for(local_location).trial(keys.parse_key(signed["plain"])) is None

    tried = cli(pgclone_cli, strict_worker, local_location,
                "verify", signed["safe"], "--restore", "--wait")  # fmt: skip

    assert tried.returncode == 0, tried.stdout + tried.stderr
    assert "as the dump recorded" in tried.stdout
    assert pgclone_databases() == []


def test_a_database_on_the_server_is_refused_but_this_ones_previous(
    strict_worker, pgclone_cli, target, signed, local_location
):
    with scratch_database() as other:
        psql("CREATE TABLE testapp_customer (email text); "
             "INSERT INTO testapp_customer VALUES ('person1@real.example')", other)  # fmt: skip

        refused = restore(pgclone_cli, strict_worker, local_location, f":{other}")

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"':{other}' is a database on the server, not a dump" in refused.stderr
    refused_before_queueing(Job.Kind.RESTORE)
    assert authors(target) == ["target-only"]
    reversible = restore(pgclone_cli, strict_worker, local_location, signed["safe"], "--reversible")
    assert reversible.returncode == 0, reversible.stdout + reversible.stderr
    assert_scrubbed_restored(target)

    undone = restore(pgclone_cli, strict_worker, local_location, ":previous")

    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert authors(target) == ["target-only"]  # what the target held before
    assert pgclone_databases() == []


@pytest.mark.parametrize("keep_signature", [False, True], ids=["unsigned", "stale-signature"])
def test_a_storage_writer_cannot_make_a_plain_dump_pass_for_scrubbed(
    strict_worker, pgclone_cli, target, signed, local_location, keep_signature
):
    """Even with PGCLONE_ALLOW_UNSIGNED, with the setting or only a restore config's
    require_scrubbed: only a signed manifest counts."""
    plain = signed["plain"]
    edit_manifest(local_location, plain, keep_signature=keep_signature)
    before = fingerprint(target)
    if not keep_signature:  # unsigned dumps are allowed here: listed, scrubbed, not signed
        listed = cli(pgclone_cli, strict_worker, local_location, "ls", "--long").stdout
        line = next(line for line in listed.splitlines() if plain in line)
        assert "scrubbed" in line and "signed" not in line and "DAMAGED" not in line

    by_setting = restore(pgclone_cli, strict_worker, local_location, plain)
    by_config = restore(pgclone_cli, strict_worker, local_location, plain,
                        "--config", "scrubbed_only", PGCLONE_TEST_REQUIRE_SCRUBBED="0")  # fmt: skip

    for refused in (by_setting, by_config):
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert (
            f"Dump {plain} says it is scrubbed, but its manifest is not signed with "
            "PGCLONE_SIGNING_KEY" in refused.stderr
        )
    assert "the restore config 'scrubbed_only' has require_scrubbed" in by_config.stderr
    assert fingerprint(target) == before
    assert set(Job.objects.filter(kind=Job.Kind.RESTORE).values_list("status", flat=True)) == {
        Job.Status.FAILED
    }
    taken = restore(pgclone_cli, strict_worker, local_location, signed["safe"],
                    "--config", "scrubbed_only", PGCLONE_TEST_REQUIRE_SCRUBBED="0")  # fmt: skip
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert_scrubbed_restored(target)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("plain", "is not scrubbed, and PGCLONE_REQUIRE_SCRUBBED is on here"),
        ("edited", "says it is scrubbed, but its manifest is not signed with PGCLONE_SIGNING_KEY"),
        ("database", "is a database on the server, not a dump"),
    ],
)
def test_the_worker_refuses_what_was_asked_for_while_the_setting_was_off(
    strict_worker, settings, target, signed, local_location, source, message
):
    """This process takes any dump and sends the job to the worker, whose setting
    is on: fetch refuses before any database is created."""
    settings.PGCLONE_CELERY_QUEUE = strict_worker.queue
    before = fingerprint(target)
    if source == "edited":
        edit_manifest(local_location, signed["plain"], keep_signature=False)
    with scratch_database() as other:
        asked = {"plain": signed["plain"], "edited": signed["plain"], "database": f":{other}"}
        job = api.restore(asked[source], database="target", config="fast")
        wait_for(lambda: api.job(job.pk).is_finished, timeout=60, what="the restore to end")

    job = api.job(job.pk)
    assert job.status == Job.Status.FAILED and message in job.error, job.error
    assert job.steps.get(name="fetch").status == "failed"
    assert job.steps.get(name="restore_temp").status == "skipped"
    assert fingerprint(target) == before and pgclone_databases() == []


def restorer() -> Client:
    user = User.objects.create_user("restorer", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_job", "restore_database"])
    )
    client = Client()
    client.force_login(user)
    return client


def row(page: str, key: str) -> str:
    return page[page.index(f"<code>{key}</code>") :].split("</tr>")[0]


def test_the_admin_offers_and_takes_only_scrubbed_dumps(
    strict_worker, settings, target, signed, local_location
):
    settings.PGCLONE_REQUIRE_SCRUBBED = True
    settings.PGCLONE_CELERY_QUEUE = strict_worker.queue
    client = restorer()
    with scratch_database() as other:
        settings.PGCLONE_LOCAL_SOURCES = [other]

        page = client.get(reverse("admin:pgclone_dumps")).content.decode()
        posted = {
            source: client.post(
                reverse("admin:pgclone_restore"),
                {"key": source, "database": "target", "config": "fast", "confirm": TARGET},
            )
            for source in (signed["plain"], f":{other}")
        }

    assert "Restore this dump" not in row(page, signed["plain"])
    assert "scrubbed dumps only" in row(page, signed["plain"])
    assert "Restore this dump" in row(page, signed["safe"])
    assert f":{other}" not in page
    assert posted[signed["plain"]].status_code == 200
    assert f"Dump {signed['plain']} is not scrubbed" in posted[signed["plain"]].content.decode()
    assert posted[f":{other}"].status_code == 200
    assert "PGCLONE_REQUIRE_SCRUBBED is on" in posted[f":{other}"].content.decode()
    assert not Job.objects.filter(kind=Job.Kind.RESTORE).exists()
    assert authors(target) == ["target-only"]

    answer = client.post(
        reverse("admin:pgclone_restore"),
        {"key": signed["safe"], "database": "target", "config": "fast", "confirm": TARGET},
    )

    assert answer.status_code == 302
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    wait_for(lambda: api.job(job.pk).is_finished, timeout=60, what="the restore to end")
    assert api.job(job.pk).status == Job.Status.SUCCEEDED, api.job(job.pk).error
    assert_scrubbed_restored(target)


@pytest.mark.parametrize(
    ("env", "check"),
    [
        ({"PGCLONE_TEST_REQUIRE_SCRUBBED": "1"}, "pgclone.E040"),
        ({"PGCLONE_TEST_RESTORE_CONFIGS": json.dumps(RESTORE_CONFIGS)}, "pgclone.E041"),
    ],
)
def test_requiring_scrubbed_dumps_without_a_signing_key_stops_the_command(
    pgclone_cli, local_location, env, check
):
    result = pgclone_cli("ls", location=local_location, env={**env, "PGCLONE_TEST_SIGNING_KEY": ""})

    assert result.returncode == 2, result.stdout + result.stderr
    assert check in result.stderr and "PGCLONE_SIGNING_KEY is not set" in result.stderr
