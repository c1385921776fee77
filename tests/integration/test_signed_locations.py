"""Signed manifests are bound to where they are stored, on real services.

Each attack is made as the threat model's storage writer: someone who can copy,
write and rename files (objects) in the dump storage, but does not hold
PGCLONE_SIGNING_KEY. What they put there must be refused by every reader
(restore, verify, ls, health, the admin, retention), never taken as the newest
dump, and a trial restore must vouch only for the bytes it restored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from pgclone import api
from pgclone.models import Job
from pgclone.storage import keys
from tests.helpers import (
    TARGET,
    authors,
    fingerprint,
    make_dump,
    pgclone_databases,
    psql,
    replace_dump_bytes,
    s3_client,
)

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "pgclone-test-signing-secret-4711"
OLD_SECRET = "pgclone-test-signing-secret-of-last-year"
DUMPS = reverse("admin:pgclone_dumps")
RESTORE = reverse("admin:pgclone_restore")


class Place:
    """The dump storage as its writer sees it: raw files, or raw S3 objects."""

    def __init__(self, location: str, endpoint: str = "") -> None:
        self.location = location
        if location.startswith("s3://"):
            bucket, _, prefix = location.removeprefix("s3://").partition("/")
            self.bucket, self.prefix = bucket, f"{prefix.strip('/')}/"
            self.client: Any = s3_client(endpoint)

    def read(self, name: str) -> bytes:
        if self.location.startswith("s3://"):
            found = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
            return found["Body"].read()
        return (Path(self.location) / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        if self.location.startswith("s3://"):
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)
            return
        path = Path(self.location) / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)

    def copy(self, key: str, to: str) -> None:
        """The dump and its manifest, byte for byte, under another key."""
        for suffix in ("", ".json"):
            self.write(to + suffix, self.read(key + suffix))


def later_key(key: str, database: str | None = None, **delta: float) -> str:
    parsed = keys.parse_key(key)
    moment = parsed.created + dt.timedelta(**delta)
    return str(keys.make_key(database or parsed.database, parsed.config, moment))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def cli_env(**extra: Any) -> dict[str, str]:
    return {"PGCLONE_TEST_SIGNING_KEY": SECRET, **extra}


def command(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("pgclone", *args, stdout=out)
    return out.getvalue().splitlines()


def row_of(lines: list[str], key: str) -> list[str]:
    """``ls --long``'s cells for one dump (columns are two spaces apart or more)."""
    (row,) = [re.split(r"\s{2,}", line) for line in lines if line.startswith(f"{key} ")]
    return row


def viewer() -> Client:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    perms = Permission.objects.filter(codename__in=["view_job", "restore_database"])
    user.user_permissions.set(perms)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def signing_key(settings: Any) -> str:
    settings.PGCLONE_SIGNING_KEY = SECRET
    return SECRET


# (a) Another database's signed dump, copied under this database's name, later -----------


def test_another_databases_signed_dump_copied_under_this_name_is_refused_everywhere(
    signing_key: str, pgclone_cli: Any, local_location: str, target: str
) -> None:
    genuine = make_dump("genuine", local_location)
    database = keys.parse_key(genuine).database
    # Another database's dump, signed with the same key: the target's own rows.
    other = api.dump(database="target", inline=True)
    assert other.status == Job.Status.SUCCEEDED, other.error
    planted = later_key(other.dump_key, database)  # its own (later) moment, under this name
    Place(local_location).copy(other.dump_key, planted)
    psql("INSERT INTO testapp_author (name) VALUES ('written since')", TARGET)
    before = fingerprint(TARGET)

    job = api.restore(database, database="target", inline=True, pre_swap_hooks=[])

    assert job.status == Job.Status.FAILED and job.dump_key == planted
    assert job.steps.get(status=Job.Status.FAILED).name == "fetch"
    assert f"Dump {planted} is refused: its signed manifest says key = " in job.error
    assert f"{other.dump_key!r}, where it is stored says {planted!r}" in job.error
    assert fingerprint(TARGET) == before and pgclone_databases() == []

    env = cli_env()
    listed = pgclone_cli("ls", database, location=local_location, env=env)
    assert listed.stdout.split() == [genuine]
    long = pgclone_cli("ls", "--long", database, location=local_location, env=env).stdout
    assert row_of(long.splitlines(), genuine)[4] == "signed"
    assert row_of(long.splitlines(), planted)[4] == "DAMAGED"  # never "signed"

    for args in (("verify", "--latest", database), ("verify", planted)):
        verified = pgclone_cli(*args, location=local_location, env=env)
        assert verified.returncode == 1, verified.stdout + verified.stderr
        assert "its signed manifest says key = " in verified.stderr

    health = pgclone_cli("health", database, location=local_location, env=env)
    assert health.returncode == 1, health.stdout + health.stderr
    assert health.stdout.startswith(f"FAIL {database}: newest dump ")
    assert f"({genuine})" in health.stdout
    assert f"a newer dump, {planted}, is damaged or refused" in health.stdout

    client = viewer()
    page = client.get(DUMPS).content.decode()
    assert f"Dump {planted} is refused: its signed manifest says key = " in page
    assert f"?key={planted.replace('/', '%2F')}" not in page  # no restore offered
    assert f"FAIL {database}: newest dump" in page
    form = {"key": planted, "database": "target", "config": "default", "confirm": TARGET}
    refused = client.post(RESTORE, form).content.decode()
    assert "is refused: its signed manifest says key =" in refused
    assert Job.objects.filter(kind=Job.Kind.RESTORE).count() == 1  # only the one above


# (b) Unsigned manifests under keys timestamped in the future ------------------------------


@pytest.mark.parametrize(
    ("where", "signed"),
    [("local", True), ("local", False), ("s3", True)],
    ids=["local-signed", "local-unsigned", "s3-signed"],
)
def test_forged_dumps_in_the_future_keep_nothing_green_and_push_no_dump_out(
    where: str, signed: bool, request: pytest.FixtureRequest, settings: Any
) -> None:
    location = request.getfixturevalue(f"{where}_location")
    place = Place(location, request.getfixturevalue("moto_server") if where == "s3" else "")
    if signed:
        settings.PGCLONE_SIGNING_KEY = SECRET
    settings.PGCLONE_DUMP_CONFIGS = {"default": {"keep_last": 2}}
    genuine = [make_dump(name, location) for name in ("first", "second")]
    database = keys.parse_key(genuine[0]).database
    forged = [later_key(genuine[1], days=days) for days in (30, 3000)]
    for key in forged:  # an unsigned manifest that says all the right things
        manifest = json.loads(place.read(f"{genuine[1]}.json"))
        manifest.pop("signature", None)
        manifest.pop("signing_key_id", None)
        created = keys.parse_key(key).created.isoformat()
        manifest.update(key=key, created=created)
        place.write(key, place.read(genuine[1]))
        place.write(f"{key}.json", json.dumps(manifest).encode())

    pruned = command("prune")
    assert pruned[0] == "Nothing to prune."
    assert [line.split(": ", 1)[0] for line in pruned[1:]] == [
        f"Left alone {key}, neither counted nor deleted" for key in forged
    ]
    assert all("more than 5 minutes after this machine's clock" in line for line in pruned[1:])
    assert [str(key) for key in api.ls(database)] == genuine
    assert api.named_dump(database) == keys.parse_key(genuine[1])
    long = command("ls", "--long", database)
    assert [row_of(long, key)[4] for key in forged] == ["DAMAGED", "DAMAGED"]
    (health,) = api.health([database])
    assert not health.healthy
    assert f"a newer dump, {forged[1]}, is damaged or refused" in health.line(now())

    third = api.dump(inline=True)  # retention after a dump counts the genuine ones only
    assert third.status == Job.Status.SUCCEEDED, third.error
    assert [str(key) for key in api.ls(database)] == [genuine[1], third.dump_key]
    upload = third.steps.get(name="upload").message
    assert "retention deleted 1 older dump(s)" in upload
    assert "2 dump(s) that can't be used were neither counted nor deleted" in upload
    assert {info.key for info in api.dump_infos(database) if info.damaged} == {
        keys.parse_key(key) for key in forged
    }


# (c) Key rotation: PGCLONE_SIGNING_KEY_FALLBACKS ---------------------------------------------


def test_a_fallback_key_checks_old_dumps_and_new_ones_are_signed_with_the_new_key(
    pgclone_cli: Any, local_location: str, target: str, settings: Any
) -> None:
    settings.PGCLONE_SIGNING_KEY = OLD_SECRET
    old = make_dump("signed-last-year", local_location)
    settings.PGCLONE_SIGNING_KEY = SECRET  # rotated: the old key only checks now
    settings.PGCLONE_SIGNING_KEY_FALLBACKS = [OLD_SECRET]
    rotated = {"PGCLONE_TEST_SIGNING_KEY_FALLBACKS": json.dumps([OLD_SECRET])}

    verified = pgclone_cli("verify", old, location=local_location, env=cli_env(**rotated))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    job = api.restore(old, database="target", inline=True, pre_swap_hooks=[])
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert authors(TARGET) == ["signed-last-year"]
    refused = pgclone_cli("verify", old, location=local_location, env=cli_env())
    assert refused.returncode == 1, refused.stdout + refused.stderr
    old_id = hashlib.sha256(OLD_SECRET.encode()).hexdigest()[:8]
    assert f"signed with a key this machine doesn't have (key id {old_id!r})" in refused.stderr
    assert "Add the key it was signed with to PGCLONE_SIGNING_KEY_FALLBACKS" in refused.stderr
    assert OLD_SECRET not in refused.stderr and SECRET not in refused.stderr

    new = make_dump("signed-this-year", local_location)
    manifest = json.loads(Path(local_location, f"{new}.json").read_text())
    assert manifest["signing_key_id"] == hashlib.sha256(SECRET.encode()).hexdigest()[:8]
    body = {name: value for name, value in manifest.items() if name != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert manifest["signature"] == hmac.new(SECRET.encode(), canonical, "sha256").hexdigest()
    assert SECRET not in json.dumps(manifest) and OLD_SECRET not in json.dumps(manifest)
    long = command("ls", "--long")
    assert row_of(long, old)[4] == row_of(long, new)[4] == "signed"


# (d) A trial vouches for the bytes it restored, nothing else ------------------------------


def test_a_trial_record_does_not_vouch_for_other_bytes(
    pgclone_cli: Any, local_location: str
) -> None:
    tried = make_dump("tried", local_location)
    database = keys.parse_key(tried).database
    trial = api.trial_restore(tried, inline=True, pre_swap_hooks=[])
    assert trial.status == Job.Status.SUCCEEDED, trial.error
    record = json.loads(Path(local_location, f"{tried}.trial.json").read_text())
    manifest = json.loads(Path(local_location, f"{tried}.json").read_text())
    assert record.get("sha256") == manifest["sha256"]
    assert re.search(r"  passed-\d+s-ago$", "\n".join(command("ls", "--long")), re.M)
    assert api.health([database])[0].healthy

    # As a storage writer: other (genuine) bytes in its place, its manifest rewritten to
    # match, its trial record left as it was.
    other = make_dump("other", local_location)
    replace_dump_bytes(local_location, tried, Path(local_location, other).read_bytes())

    row = row_of(command("ls", "--long"), tried)
    assert row[5].startswith("FAILED-")
    (health,) = api.health([database])
    assert not health.healthy
    assert "its record: it is of other bytes" in health.line(now())
    shown = pgclone_cli("health", database, location=local_location)
    assert shown.returncode == 1 and "it is of other bytes" in shown.stdout
