"""Scrubbed and subset dumps end to end: made by a real worker (pg_dump, the plan's
COPYs in the dump's snapshot), stored, verified, and restored through a worker
(from local storage and from S3, encrypted, in parallel COPY sessions)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest
import zstandard
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from pgclone import api
from pgclone.archive import containers
from pgclone.models import Job
from tests.helpers import (
    deciding,
    fingerprint,
    make_dump,
    pgclone_databases,
    psql,
    s3_client,
    scratch_database,
)
from tests.integration.test_restore import STREAM_DAMAGE, damage_in_s3
from tests.integration.test_subset import CUSTOMERS, ORDERS, SAFE, shop  # noqa: F401 (fixture)
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

IDENTITY = pyrage.x25519.Identity.generate()
RECIPIENT = str(IDENTITY.to_public())
SAFE_CONFIG = deciding(
    {
        "scrub": {
            **SAFE["scrub"],
            "auth.User": {
                "email": "email",
                "first_name": "first_name",
                "last_name": "last_name",
                "password": "unusable_password",
            },
        },
        "subset": SAFE["subset"],
    }
)
DUMP_CONFIGS = {
    "safe": SAFE_CONFIG,
    "sealed": {**SAFE_CONFIG, "encryption_recipients": [RECIPIENT]},
    "bad_where": {"subset": {"testapp.Order": {"where": "no_such_column > 1"}}},
    "empty_root": {"subset": {"testapp.Order": {"where": "id < 0"}}},
}
# require_scrubbed (signed dumps only) is tested in tests/integration/test_require_scrubbed.py.
RESTORE_CONFIGS = {"no_hooks": {"pre_swap_hooks": []}}
# What the source holds in scrubbed columns, and must be nowhere after.
ORIGINALS = ("Real Person", "real.example", "Real Road", "likes thing", "192.0.2.", "7700 900")


@pytest.fixture(scope="module")
def planned_worker(tmp_path_factory, test_database_name, moto_server) -> Iterator[Any]:
    """A worker whose settings have the scrubbed configs, and the identity of RECIPIENT."""
    keys = tmp_path_factory.mktemp("planned-keys") / "pgclone.agekey"
    keys.write_text(f"{IDENTITY}\n")
    keys.chmod(0o600)
    queue = own_queue("planned")
    env = {
        "PGCLONE_TEST_QUEUE": queue,
        "PGCLONE_TEST_DUMP_CONFIGS": json.dumps(DUMP_CONFIGS),
        "PGCLONE_TEST_RESTORE_CONFIGS": json.dumps(RESTORE_CONFIGS),
        "PGCLONE_TEST_ENCRYPTION_IDENTITIES": json.dumps([str(keys)]),
    }
    log = tmp_path_factory.mktemp("planned-worker") / "worker.log"
    worker = start_worker(test_database_name, log, moto=moto_server, queue=queue, env=env)
    worker.env = env  # for `manage.py pgclone` sending to it
    yield worker
    stop_worker(worker)


@pytest.fixture
def users(shop) -> list[User]:  # noqa: F811 (the fixture imported above)
    """A user per tenth customer, with the customer's email (and a name of their own)."""
    return [
        User.objects.create(username=f"c{c.pk}", email=c.email, first_name="Realfirst")
        for c in shop["customers"][::10]
    ]


def cli(pgclone_cli, worker, location: str, *args: str):
    return pgclone_cli(*args, location=location, env=worker.env)


def dump(pgclone_cli, worker, location: str, config: str) -> str:
    result = cli(pgclone_cli, worker, location, "dump", "--config", config, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    return Job.objects.filter(kind=Job.Kind.DUMP).latest("created_at").dump_key


def restore(pgclone_cli, worker, location: str, key: str, *args: str):
    return cli(pgclone_cli, worker, location, "restore", key, "--database", "target", "--wait",
               *args)  # fmt: skip


def members(plaintext: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r|") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def assert_scrubbed_and_subset(source: str, target: str) -> None:
    """(a) no original scrubbed value, (b) emails unique and the same wherever
    they were, (c) every foreign key holds and the subset is about 10%."""
    for table, column in (
        ("testapp_customer", "name"), ("testapp_customer", "email"),
        ("testapp_customer", "notes"), ("testapp_customer", "profile::text"),
        ("testapp_customer", "ip::text"), ("testapp_address", "street"),
        ("auth_user", "email"), ("auth_user", "first_name"),
    ):  # fmt: skip
        restored = psql(f"SELECT string_agg({column}, '|') FROM {table}", target)
        originals = psql(f"SELECT string_agg({column}, '|') FROM {table}", source).split("|")
        assert not set(restored.split("|")) & set(originals), (table, column)
        assert not any(original in restored for original in ORIGINALS), (table, column)
    assert psql("SELECT count(*) FROM testapp_customer WHERE phone IS NOT NULL", target) == "0"
    emails = psql("SELECT count(email), count(DISTINCT email) FROM testapp_customer", target)
    total, distinct = emails.split("|")
    assert total == distinct and int(total) > 0
    # A customer's email is the same in auth_user and in its profile.
    assert (
        psql(
            "SELECT count(*) FROM auth_user u JOIN testapp_customer c ON u.username = 'c' || c.id",
            target,
        )
        != "0"
    )
    assert (
        psql(
            "SELECT count(*) FROM auth_user u JOIN testapp_customer c ON u.username = 'c' || c.id "
            "WHERE u.email <> c.email OR c.profile->'contact'->>'email' <> c.email",
            target,
        )
        == "0"
    )
    kept = int(psql("SELECT count(*) FROM testapp_order", target))
    assert ORDERS * 0.08 <= kept <= ORDERS * 0.12
    assert psql("SELECT count(*) FROM testapp_orderitem", target) == str(2 * kept)
    # The restore created every foreign key after the rows: all of them hold.
    assert int(psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", target)) >= 8
    assert (
        psql(
            "SELECT count(*) FROM testapp_orderitem i "
            "LEFT JOIN testapp_order o ON o.id = i.order_id WHERE o.id IS NULL",
            target,
        )
        == "0"
    )
    assert 0 < int(psql("SELECT count(*) FROM testapp_customer", target)) < CUSTOMERS


@pytest.mark.matrix  # COPY out and in differ by driver
def test_a_safe_dump_is_scrubbed_subset_verified_and_restores_in_parallel(
    planned_worker, pgclone_cli, local_location, target, users, test_database_name
):
    key = dump(pgclone_cli, planned_worker, local_location, "safe")

    manifest = json.loads((Path(local_location) / f"{key}.json").read_text())
    assert manifest["format"] == containers.FORMAT
    assert manifest["scrubbed"] is True and manifest["subset"] is True
    assert manifest["plan"]["digest"] and len(manifest["plan"]["scrub_key_id"]) == 16
    rows = manifest["plan"]["rows"]
    assert ORDERS * 0.08 <= rows["public.testapp_order"] <= ORDERS * 0.12
    counted = {t["name"]: t for t in manifest["tables"]}
    assert counted["testapp_order"]["rows"] == rows["public.testapp_order"]
    # The stored bytes: a tar of the plan, the archives and the COPYs, none of the originals.
    stored = (Path(local_location) / key).read_bytes()
    plaintext = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    found = members(plaintext)
    names = list(found)
    assert names[:2] == ["plan.json", "pre-data/000000"]
    assert names[-1].startswith("post-data/")
    plan = json.loads(found["plan.json"])
    assert {containers.stream_of(name) for name in names} == {
        "plan.json", "pre-data", "rest", "post-data", *(t["member"] for t in plan["tables"])
    }  # fmt: skip
    assert (
        plan["format"] == containers.FORMAT
        and plan["config"] == "safe"
        and plan["encoding"] == "UTF8"  # the COPY text's: the database's
        and "key" not in json.dumps(plan).replace("scrub_key_id", "")
    )
    for original in ORIGINALS:
        assert original.encode() not in plaintext, original
    listed = cli(pgclone_cli, planned_worker, local_location, "ls", "--long").stdout
    assert "scrubbed,subset" in next(line for line in listed.splitlines() if key in line)

    checked = cli(pgclone_cli, planned_worker, local_location, "verify", key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"public.testapp_order: {rows['public.testapp_order']} rows" in checked.stdout
    trial = cli(pgclone_cli, planned_worker, local_location, "verify", key, "--restore", "--wait")
    assert trial.returncode == 0, trial.stdout + trial.stderr
    assert "as the dump recorded" in trial.stdout

    result = restore(pgclone_cli, planned_worker, local_location, key, "--config", "no_hooks")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "COPY of the planned tables in " in result.stdout
    assert "pg_restore --jobs=" in result.stdout
    assert_scrubbed_and_subset(test_database_name, target)
    assert pgclone_databases() == []


@pytest.mark.matrix  # COPY out and in differ by driver
def test_an_encrypted_safe_dump_streams_from_s3(
    planned_worker, pgclone_cli, s3_location, moto_server, target, users, test_database_name
):
    key = dump(pgclone_cli, planned_worker, s3_location, "sealed")
    bucket, prefix = s3_location.removeprefix("s3://").split("/", 1)
    stored = (
        s3_client(moto_server)
        .get_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{key}")["Body"]
        .read()
    )
    plaintext = (
        zstandard.ZstdDecompressor()
        .stream_reader(io.BytesIO(pyrage.decrypt(stored, [IDENTITY])))
        .read()
    )
    for original in ORIGINALS:
        assert original.encode() not in plaintext, original

    result = restore(pgclone_cli, planned_worker, s3_location, key)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "COPY of the planned tables in " in result.stdout  # from S3, in parallel too
    assert_scrubbed_and_subset(test_database_name, target)
    assert pgclone_databases() == []


@STREAM_DAMAGE
def test_a_damaged_safe_dump_fails_before_the_swap(
    planned_worker, pgclone_cli, s3_location, moto_server, users, target, change, message
):
    """Streamed from S3: checked as it streams, the live database never touched."""
    key = dump(pgclone_cli, planned_worker, s3_location, "safe")
    damage_in_s3(moto_server, s3_location, key, change)
    before = fingerprint(target)

    result = restore(pgclone_cli, planned_worker, s3_location, key)

    assert result.returncode == 1 and message in result.stderr, result.stdout + result.stderr
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    assert job.steps.get(name="restore_temp").status == "failed"
    assert job.steps.get(name="swap").status == "skipped"
    assert fingerprint(target) == before and pgclone_databases() == []


def without_psql(directory: Path) -> str:
    """A PATH with every program of this one's PATH but psql."""
    directory.mkdir()
    for program in ("pg_dump", "pg_restore", "psql"):
        found = shutil.which(program)
        assert found, f"{program} is needed on PATH for this test"
        if program != "psql":
            (directory / program).symlink_to(found)
    return str(directory)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("bad_where", 'column "no_such_column" does not exist'),
        ("empty_root", "has no rows"),
        ("safe", "psql was not found on PATH: install the PostgreSQL client tools"),
    ],
)
def test_a_plan_that_cannot_run_fails_the_dump_before_pg_dump(
    shop,  # noqa: F811 (the fixture imported above)
    settings,
    monkeypatch,
    tmp_path,
    local_location,
    config,
    message,
):
    settings.PGCLONE_DUMP_CONFIGS = DUMP_CONFIGS
    if config == "safe":  # pg_dump is there, psql isn't
        monkeypatch.setenv("PATH", without_psql(tmp_path / "bin"))

    job = api.dump(config=config, inline=True)

    assert job.status == Job.Status.FAILED and message in job.error
    assert job.steps.get(name="dump").status == "failed"
    assert "raw_size" not in job.result  # nothing was dumped
    assert api.ls() == [] and not [p for p in Path(local_location).glob("**/*") if p.is_file()]


def test_the_admin_shows_what_a_dump_did_to_the_data(settings, local_location, users):
    settings.PGCLONE_DUMP_CONFIGS = DUMP_CONFIGS
    plain = make_dump("plain-cy", local_location)
    safe = api.dump(config="safe", inline=True)
    assert safe.status == Job.Status.SUCCEEDED, safe.error
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_job"))
    client = Client()
    client.force_login(viewer)

    page = client.get(reverse("admin:pgclone_dumps")).content.decode()

    rows = {
        key: page[page.index(f"<code>{key}</code>") :].split("</tr>")[0]
        for key in (plain, safe.dump_key)
    }
    # the credential tables (sessions, tokens) are emptied: rows left out
    assert '<td class="pgclone-data">scrubbed, subset, rows-excluded</td>' in rows[safe.dump_key]
    assert '<td class="pgclone-data">-</td>' in rows[plain]


def pg_dump(database: str, *args: str) -> bytes:
    argv = ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-Fc", "-d", database, *args]
    return subprocess.run(argv, stdout=subprocess.PIPE, check=True).stdout


def test_a_plan_1_container_still_restores():
    """A pgclone-plan-1 container (each stream whole, the rest's data and
    post-data in one archive, last), assembled from real pg_dump archives:
    its rows and its foreign key are restored, streamed."""
    from pgclone.archive import planned_restore
    from pgclone.pg import postgres

    table = {"schema": "public", "name": "planned", "columns": ["id", "label"]}
    with scratch_database() as source, scratch_database() as into:
        psql(
            "CREATE TABLE planned (id int PRIMARY KEY, label text);"
            "CREATE TABLE other (id int PRIMARY KEY, planned_id int REFERENCES planned);"
            "INSERT INTO planned VALUES (1, 'one'), (2, 'two'), (3, 'three');"
            "INSERT INTO other VALUES (10, 1), (20, 2)",
            source,
        )
        out = io.BytesIO()
        tar = containers.TarWriter(out.write)
        tar.json(
            containers.PLAN,
            {"format": containers.LEGACY_FORMAT, "tables": [{**table, "member": "data/0000"}]},
        )
        for prefix, data in (
            (containers.PRE_DATA, pg_dump(source, "--section=pre-data")),
            ("data/0000", b"1\tone\n2\ttwo\n3\tthree\n"),
            (containers.REST, pg_dump(source, "--section=data", "--section=post-data",
                                      "--exclude-table-data=planned")),
        ):  # fmt: skip
            chunks = tar.stream(prefix)
            chunks.write(data)
            chunks.close()
        tar.close()
        stored = io.BytesIO(zstandard.ZstdCompressor().compress(out.getvalue()))
        checks = {"expected_sha256": None, "on_progress": lambda _: None}
        conn = postgres.conn_info().with_name(into)

        rows = planned_restore.restore_streamed(stored, conn, checks)

        assert rows == 3
        assert psql("SELECT string_agg(label, ',' ORDER BY id) FROM planned", into) == (
            "one,two,three"
        )
        assert psql("SELECT count(*) FROM other JOIN planned ON planned.id = planned_id", into) == (
            "2"
        )
        foreign_keys = "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        assert psql(foreign_keys, into) == "1"


def test_a_plan_2_container_still_restores():
    """A pgclone-plan-2 container (its data streams interleaved, no end
    members, post-data apart), assembled from real pg_dump archives as the
    writer of that format wrote them: rows and foreign key restored."""
    from pgclone.archive import planned_restore
    from pgclone.pg import postgres

    table = {"schema": "public", "name": "planned", "columns": ["id", "label"]}
    with scratch_database() as source, scratch_database() as into:
        psql(
            "CREATE TABLE planned (id int PRIMARY KEY, label text);"
            "CREATE TABLE other (id int PRIMARY KEY, planned_id int REFERENCES planned);"
            "INSERT INTO planned VALUES (1, 'one'), (2, 'two'), (3, 'three');"
            "INSERT INTO other VALUES (10, 1), (20, 2)",
            source,
        )
        out = io.BytesIO()
        tar = containers.TarWriter(out.write)
        tar.json(
            containers.PLAN,
            {"format": containers.PLAN_FORMAT, "tables": [{**table, "member": "data/0000"}]},
        )
        rest = pg_dump(source, "--section=data", "--exclude-table-data=planned")
        for name, data in (
            ("pre-data/000000", pg_dump(source, "--section=pre-data")),
            ("data/0000/000000", b"1\tone\n2\ttwo\n"),
            ("rest/000000", rest[:100]),
            ("data/0000/000001", b"3\tthree\n"),
            ("rest/000001", rest[100:]),
            ("post-data/000000", pg_dump(source, "--section=post-data")),
        ):
            tar.member(name, data)
        tar.close()
        stored = io.BytesIO(zstandard.ZstdCompressor().compress(out.getvalue()))
        checks = {"expected_sha256": None, "on_progress": lambda _: None}
        conn = postgres.conn_info().with_name(into)

        rows = planned_restore.restore_streamed(stored, conn, checks)

        assert rows == 3
        assert psql("SELECT string_agg(label, ',' ORDER BY id) FROM planned", into) == (
            "one,two,three"
        )
        assert psql("SELECT count(*) FROM other JOIN planned ON planned.id = planned_id", into) == (
            "2"
        )
        foreign_keys = "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        assert psql(foreign_keys, into) == "1"
