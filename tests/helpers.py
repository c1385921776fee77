"""Plain helpers of the tests: waiting, psql, databases made and compared, dumps
made and altered. The fixtures are in the conftest.py files."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


# PostgreSQL helpers -------------------------------------------------------------


def psql(sql: str, database: str = "postgres") -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-AtX", "-v",
         "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    name = f"pgclone_scratch_{uuid.uuid4().hex[:10]}"
    psql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def restore_into(dump_bytes: bytes, database: str) -> None:
    """Restore a pgclone dump into ``database`` as users can by hand: a container
    with the documented commands (:func:`restore_by_hand`), an older plain dump
    decompressed into pg_restore."""
    import zstandard

    raw = zstandard.ZstdDecompressor().decompressobj().decompress(dump_bytes)
    if not raw.startswith(b"PGDMP"):
        restore_by_hand(dump_bytes, database)
        return
    subprocess.run(
        ["pg_restore", "-h", "127.0.0.1", "-U", "postgres", "--no-owner", "--exit-on-error",
         "-d", database],
        input=raw, capture_output=True, check=True,
    )  # fmt: skip


BY_HAND_MARKER = "<!-- by-hand-restore:"


def by_hand_restore_script() -> str:
    """The by-hand restore of a container, as docs/how-it-works.md writes it."""
    text = (ROOT / "docs" / "how-it-works.md").read_text()
    after = text[text.index(BY_HAND_MARKER) :]
    return after.split("```sh\n", 1)[1].split("\n```", 1)[0]


def restore_by_hand(dump_bytes: bytes, database: str) -> subprocess.CompletedProcess:
    """Run the documented by-hand restore of a container (zstd, tar, psql,
    pg_restore; no pgclone code) on ``dump_bytes`` into ``database``, in a
    folder of its own, removed after."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pgclone-by-hand-") as folder:
        key = Path(folder) / "dump"
        key.write_bytes(dump_bytes)
        env = {**os.environ, "KEY": str(key), "NEW": database, "PGHOST": "127.0.0.1",
               "PGUSER": "postgres"}  # fmt: skip
        # -e as a user's shell goes: a pipeline's status is its last program's. tar stops
        # at the end-of-archive blocks and may exit, done, before zstd wrote the zeros
        # after them: zstd's SIGPIPE, silent, would fail a pipefail shell.
        script = "set -eu\n" + by_hand_restore_script()
        done = subprocess.run(
            ["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done


def clone_database(source: str, name: str) -> None:
    """A copy made with the real tools (a template copy would need ``source`` idle)."""
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-Fc", "-d", source],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(
        ["pg_restore", "-h", "127.0.0.1", "-U", "postgres", "--no-owner", "-d", name],
        input=dump, capture_output=True, check=True,
    )  # fmt: skip


FINGERPRINT_TABLES = ("testapp_author", "testapp_book", "testapp_secret", "testapp_mark")


def fingerprint(database: str) -> dict[str, str]:
    """The contents of the sample tables, as a comparable value."""
    return {
        table: psql(
            "SELECT count(*) || ':' || "
            f"coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t",
            database,
        )
        for table in FINGERPRINT_TABLES
    }


def pgclone_databases() -> list[str]:
    """Temporary or old databases left by this session's jobs (other runs on the
    same server, a benchmark say, have their own).

    A restore drops the database it replaced just after reporting success:
    the ``pgclone_old_…`` databases of succeeded jobs get a few seconds to go.
    """
    from pgclone.models import Job

    deadline = time.monotonic() + 10
    while True:
        ours = {
            str(pk).replace("-", "")[:20]: status
            for pk, status in Job.objects.values_list("id", "status")
        }
        found = psql(
            "SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_database "
            "WHERE datname LIKE 'pgclone\\_tmp\\_%' OR datname LIKE 'pgclone\\_old\\_%'"
        ).split()
        names = [name for name in found if name.split("_")[2] in ours]
        dropping = [
            name
            for name in names
            if name.startswith("pgclone_old_") and ours[name.split("_")[2]] == Job.Status.SUCCEEDED
        ]
        if not dropping or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def copy_dump(
    location: str, key: str, database: str, timestamp: str, config: str = "default"
) -> str:
    """Store an existing local dump again under another name, as if made then."""
    import json

    from pgclone.storage import keys, storage_for

    source = keys.parse_key(key)
    new = keys.DumpKey(database, timestamp, config)
    root = Path(location)
    (root / database).mkdir(exist_ok=True)
    (root / str(new)).write_bytes((root / str(source)).read_bytes())
    manifest = storage_for(location).read_manifest(source)
    manifest.update(key=str(new), database=database, config=config)
    (root / f"{new}.json").write_text(json.dumps(manifest))
    return str(new)


def replace_dump_bytes(location: str, key: str, data: bytes) -> None:
    """Put ``data`` in place of a local dump, its manifest's size and SHA-256
    rewritten to match: a change only what is inside the dump can reveal."""
    import hashlib
    import json

    path = Path(location) / key
    path.write_bytes(data)
    manifest_path = Path(f"{path}.json")
    manifest = json.loads(manifest_path.read_text())
    manifest.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    if "pre_data_sha256" in manifest and not manifest.get("encryption"):
        manifest["pre_data_sha256"] = pre_data_sha256(data)  # as its writer hashed it
    manifest_path.write_text(json.dumps(manifest))


def pre_data_sha256(stored: bytes) -> str:
    """The SHA-256 of a stored (plain) container's pre-data archive: its
    ``pre-data/…`` members' bytes, in order."""
    import hashlib
    import io
    import tarfile

    import zstandard

    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    digest = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tar:
        for member in tar:  # the plan, then the pre-data: read no further
            if member.name.startswith("pre-data/"):
                digest.update(tar.extractfile(member).read())
            elif member.name != "plan.json":
                break
    return digest.hexdigest()


# Restores in the integration tests -------------------------------------------------------


TARGET = os.environ.get("PGCLONE_TEST_TARGET", "")  # set by tests.settings
# The roles of the "limited" and "owner" aliases (tests.settings): one per session,
# so that two test runs on one server never share a role.
_SESSION = os.environ.get("PGCLONE_TEST_SESSION", "")
LIMITED_ROLE = f"pgclone_limited_{_SESSION}"
OWNER_ROLE = f"pgclone_owner_{_SESSION}"


def drop_target_databases() -> None:
    from pgclone.pg import databases

    for name in (
        TARGET,
        databases.copy_name(TARGET, "previous"),
        databases.copy_name(TARGET, "current"),
    ):
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_dump(name: str, location: str) -> str:
    """A real dump of the test database holding one author called ``name``."""
    from pgclone import api
    from pgclone.models import Job
    from tests.testapp.models import Author, Book, Secret

    Book.objects.all().delete()
    Author.objects.all().delete()
    author = Author.objects.create(name=name)
    Book.objects.create(author=author, title=f"{name}'s book")
    Secret.objects.create(value=name)
    job = api.dump(inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job.dump_key


def authors(database: str) -> list[str]:
    return psql("SELECT string_agg(name, ',' ORDER BY name) FROM testapp_author", database).split(
        ","
    )


# Scrubbed dump configs ----------------------------------------------------------

# The test project's columns that can hold text, by table: those a scrubbed dump
# must decide. Not listed: auth_user.password (made unusable by default) and the
# tables pgclone decides itself (the sessions emptied, the migrations, content
# types and permissions kept, its own job tables left out).
PROJECT_TEXT_COLUMNS = {
    "auth_group": ("name",),
    "auth_user": ("email", "first_name", "last_name", "username"),
    "django_admin_log": ("change_message", "object_id", "object_repr"),
    "django_celery_beat_crontabschedule": (
        "day_of_month", "day_of_week", "hour", "minute", "month_of_year", "timezone",
    ),
    "django_celery_beat_intervalschedule": ("period",),
    "django_celery_beat_periodictask": (
        "args", "description", "exchange", "headers", "kwargs", "name", "queue", "routing_key",
        "task",
    ),
    "django_celery_beat_solarschedule": ("event",),
    "testapp_address": ("street",),
    "testapp_author": ("name",),
    "testapp_book": ("title",),
    "testapp_customer": ("email", "ip", "name", "notes", "phone", "profile"),
    "testapp_mark": ("note",),
    "testapp_note": ("object_id",),
    "testapp_product": ("name",),
    "testapp_secret": ("value",),
    "testapp_tag": ("name",),
}  # fmt: skip


def deciding(config: dict[str, Any], tables: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config`` (with 'scrub') deciding every column of the test project: 'keep'
    for each column its rules don't name, as a reviewed config would say, and
    ``tables``' decisions on the tables a test makes itself."""
    from django.apps import apps

    ruled = {
        (apps.get_model(label)._meta.db_table, apps.get_model(label)._meta.get_field(name).column)
        for label, fields in config.get("scrub", {}).items()
        for name in fields
    }
    kept = {
        f"public.{table}": {column: "keep" for column in columns if (table, column) not in ruled}
        for table, columns in PROJECT_TEXT_COLUMNS.items()
    }
    decided = {name: spec for name, spec in kept.items() if spec}
    return {**config, "tables": {**decided, **(tables or {}), **config.get("tables", {})}}
