"""Security: the admin restores only what it offered, PGCLONE_LOCAL_SOURCES, owner-only
dump files, S3 encryption arguments, and signed manifests, on real services."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from pgclone import api
from pgclone.exceptions import InvalidInput
from pgclone.models import Job
from tests.helpers import (
    TARGET,
    authors,
    clone_database,
    fingerprint,
    make_dump,
    pgclone_databases,
    psql,
    s3_client,
    wait_for,
)
from tests.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True)

RESTORE = reverse("admin:pgclone_restore")
DUMPS = reverse("admin:pgclone_dumps")
SECRET = "pgclone-test-signing-secret-0815"
MISMATCH = "signature does not match: it was changed after it was made, or signed with another key"


# Helpers ------------------------------------------------------------------------------


def restorer() -> Client:
    user = User.objects.create_user("restorer", password="pw", is_staff=True)
    perms = Permission.objects.filter(codename__in=["view_job", "restore_database"])
    user.user_permissions.set(perms)
    client = Client()
    client.force_login(user)
    return client


def post_restore(client: Client, key: str) -> Any:
    form = {"key": key, "database": "target", "config": "default", "confirm": TARGET}
    return client.post(RESTORE, form)


@pytest.fixture
def other_database(test_database_name: str) -> Iterator[str]:
    """Another database on the server, holding the author 'other-db'."""
    name = f"pgclone_other_{os.getpid()}"
    Author.objects.all().delete()
    Author.objects.create(name="other-db")
    clone_database(test_database_name, name)
    Author.objects.all().delete()
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def unchanged_target(target: str) -> Iterator[str]:
    before = fingerprint(target)
    yield target
    assert fingerprint(target) == before
    assert pgclone_databases() == []


def restore_inline(key: str, **kwargs: Any) -> Job:
    return api.restore(key, database="target", inline=True, pre_swap_hooks=[], **kwargs)


def failed_step(job: Job) -> str:
    return job.steps.get(status=Job.Status.FAILED).name


def stored(location: str, key: str) -> tuple[Path, Path]:
    data = Path(location) / key
    return data, data.with_name(data.name + ".json")


def rewrite_manifest(location: str, key: str, **fields: Any) -> None:
    _, manifest_path = stored(location, key)
    manifest = json.loads(manifest_path.read_text())
    manifest.update(fields)
    manifest_path.write_text(json.dumps(manifest))


def no_secret_recorded() -> None:
    for job in Job.objects.all():
        assert SECRET not in json.dumps([job.options, job.result, job.error])
        assert all(SECRET not in step.message for step in job.steps.all())


# 1. The admin's restore form ------------------------------------------------------------


@pytest.mark.parametrize(
    "forged",
    [
        "other",  # :<another database on the server>
        ":previous",  # no such copy exists
        "app/20260101T000000.000000Z.default.dump",  # not in storage
        "app",  # a database name, not a key
    ],
)
def test_the_admin_refuses_a_key_it_did_not_offer(
    forged: str, local_location: str, unchanged_target: str, other_database: str
) -> None:
    key = f":{other_database}" if forged == "other" else forged
    answer = post_restore(restorer(), key)
    assert answer.status_code == 200
    assert "Hidden field key" in answer.content.decode()
    assert not Job.objects.exists()


def test_the_admin_refuses_other_databases_until_local_sources_lists_them(
    local_location: str, unchanged_target: str, other_database: str, settings: Any
) -> None:
    client = restorer()
    settings.PGCLONE_LOCAL_SOURCES = ["some_other_name"]
    page = post_restore(client, f":{other_database}").content.decode()
    assert "is not offered here" in page and not Job.objects.exists()
    assert f":{other_database}" not in client.get(DUMPS).content.decode()

    settings.PGCLONE_LOCAL_SOURCES = [other_database]
    assert f"key=%3A{other_database}&amp;database=target" in client.get(DUMPS).content.decode()
    settings.PGCLONE_ALLOW_RESTORE = False  # accepted by the form: refused by the API only
    post_restore(client, f":{other_database}")
    job = Job.objects.get()
    assert job.status == Job.Status.FAILED and "Restores are disabled" in job.error


def test_the_admin_still_restores_a_dump_it_offered(
    celery_worker: Any, local_location: str, target: str
) -> None:
    key = make_dump("offered", local_location)
    client = restorer()
    answer = post_restore(client, key)
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    assert answer.status_code == 302, answer.content.decode()
    done = wait_for(lambda: Job.objects.filter(pk=job.pk, status__in=Job.FINISHED).first())
    assert done.status == Job.Status.SUCCEEDED, done.error
    assert authors(TARGET) == ["offered"]


def test_the_admin_offers_an_undo_only_when_the_copy_exists(
    celery_worker: Any, local_location: str, target: str
) -> None:
    first = make_dump("first", local_location)
    assert restore_inline(first, reversible=True).status == Job.Status.SUCCEEDED
    client = restorer()
    assert "key=%3Aprevious&amp;database=target" in client.get(DUMPS).content.decode()

    answer = post_restore(client, ":previous")
    assert answer.status_code == 302, answer.content.decode()
    undo = Job.objects.filter(kind=Job.Kind.RESTORE).exclude(dump_key=first).get()
    done = wait_for(lambda: Job.objects.filter(pk=undo.pk, status__in=Job.FINISHED).first())
    assert done.status == Job.Status.SUCCEEDED, done.error
    assert authors(TARGET) == ["target-only"]
    # That restore was not reversible: the copies are gone, and so is the offer.
    assert "Hidden field key" in post_restore(client, ":previous").content.decode()


# 1b. PGCLONE_LOCAL_SOURCES from the command line and the API ---------------------------------


def test_local_sources_limit_the_command(
    pgclone_cli: Any, local_location: str, target: str, other_database: str
) -> None:
    env = {"PGCLONE_TEST_LOCAL_SOURCES": json.dumps([other_database])}

    def cli(*args: str) -> Any:
        return pgclone_cli(*args, location=local_location, env=env)

    before = fingerprint(target)
    refused = cli("restore", ":not_listed", "--database", "target", "--inline")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "PGCLONE_LOCAL_SOURCES allows" in refused.stderr and other_database in refused.stderr
    assert fingerprint(target) == before

    listed = cli("ls", "--local", "--database", "target").stdout.split()
    assert f":{other_database}" in listed
    assert set(listed) <= {f":{other_database}", ":previous", ":current"}

    done = cli("restore", f":{other_database}", "--database", "target", "--inline")
    assert done.returncode == 0, done.stdout + done.stderr
    assert authors(TARGET) == ["other-db"]


def test_local_sources_limit_the_api(settings: Any, target: str, test_database_name: str) -> None:
    settings.PGCLONE_LOCAL_SOURCES = ["staging_copy"]
    with pytest.raises(InvalidInput, match="PGCLONE_LOCAL_SOURCES allows :staging_copy"):
        api.resolve_source(f":{test_database_name}", TARGET)
    assert api.resolve_source(":previous", TARGET).type == "database"
    assert all(target in (":previous", ":current") for target, _ in api.local_sources("target"))


# 2. Dumps at rest ---------------------------------------------------------------------------


def test_local_dumps_are_owner_only_whatever_the_umask(local_location: str) -> None:
    saved = os.umask(0)  # the most permissive umask: pgclone must not rely on it
    try:
        key = make_dump("private", local_location)
    finally:
        os.umask(saved)
    data, manifest = stored(local_location, key)
    assert stat.S_IMODE(data.stat().st_mode) == 0o600
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.parent.stat().st_mode) == 0o700  # the database's folder
    assert stat.S_IMODE(Path(local_location).stat().st_mode) == 0o700  # the root pgclone made


def test_s3_extra_args_encrypt_the_dump_and_its_manifest(
    s3_location: str, moto_server: str, settings: Any
) -> None:
    settings.PGCLONE_S3_EXTRA_ARGS = {"ServerSideEncryption": "AES256"}
    key = make_dump("encrypted", s3_location)
    bucket, _, prefix = s3_location.removeprefix("s3://").partition("/")
    client = s3_client(moto_server)
    for name in (key, f"{key}.json"):
        head = client.head_object(Bucket=bucket, Key=f"{prefix}/{name}")
        assert head.get("ServerSideEncryption") == "AES256", name


# 2b. Signed manifests ------------------------------------------------------------------------


@pytest.fixture
def signing_key(settings: Any) -> str:
    settings.PGCLONE_SIGNING_KEY = SECRET
    return SECRET


def test_a_signed_dump_restores_and_verifies(
    signing_key: str, pgclone_cli: Any, local_location: str, target: str
) -> None:
    key = make_dump("signed", local_location)
    _, manifest = stored(local_location, key)
    assert len(json.loads(manifest.read_text())["signature"]) == 64
    verified = pgclone_cli(
        "verify", key, location=local_location, env={"PGCLONE_TEST_SIGNING_KEY": SECRET}
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert restore_inline(key).status == Job.Status.SUCCEEDED
    assert authors(TARGET) == ["signed"]
    no_secret_recorded()


def test_tampered_data_with_a_rewritten_digest_is_refused(
    signing_key: str, pgclone_cli: Any, local_location: str, unchanged_target: str
) -> None:
    key = make_dump("tampered", local_location)
    data_path, _ = stored(local_location, key)
    data = bytearray(data_path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"TAMPERED"
    data += b"and longer"
    data_path.write_bytes(bytes(data))
    rewrite_manifest(local_location, key, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    job = restore_inline(key)
    assert job.status == Job.Status.FAILED and MISMATCH in job.error
    assert failed_step(job) == "fetch"

    verified = pgclone_cli(
        "verify", key, location=local_location, env={"PGCLONE_TEST_SIGNING_KEY": SECRET}
    )
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert MISMATCH in verified.stderr
    no_secret_recorded()


def test_a_dump_replaced_by_another_valid_one_is_refused(
    signing_key: str, local_location: str, unchanged_target: str
) -> None:
    key = make_dump("genuine", local_location)
    other = make_dump("substitute", local_location)
    data_path, _ = stored(local_location, key)
    other_path, other_manifest = stored(local_location, other)
    data_path.write_bytes(other_path.read_bytes())
    substitute = json.loads(other_manifest.read_text())
    rewrite_manifest(
        local_location,
        key,
        **{name: substitute[name] for name in ("sha256", "size", "raw_size")},
    )

    job = restore_inline(key)
    assert job.status == Job.Status.FAILED and MISMATCH in job.error
    assert failed_step(job) == "fetch"


def test_unsigned_dumps_are_refused_unless_allowed(
    local_location: str, target: str, settings: Any
) -> None:
    key = make_dump("unsigned", local_location)  # made before signing was turned on
    before = fingerprint(target)
    settings.PGCLONE_SIGNING_KEY = SECRET

    refused = restore_inline(key)
    assert refused.status == Job.Status.FAILED and failed_step(refused) == "fetch"
    assert "is not signed, and PGCLONE_SIGNING_KEY is set" in refused.error
    assert fingerprint(target) == before and pgclone_databases() == []

    settings.PGCLONE_ALLOW_UNSIGNED = True
    assert restore_inline(key).status == Job.Status.SUCCEEDED
    assert authors(TARGET) == ["unsigned"]
