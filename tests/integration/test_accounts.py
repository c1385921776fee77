"""The accounts a dump holds that could sign in to the admin: counted by the dump
step in its snapshot (staff, active, a usable password; in a subset or scrubbed
dump, among the rows it wrote), recorded in the manifest, and what the restore
form says and refuses with them (through Django's test client: no script)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from pgclone import api
from pgclone.models import Job
from pgclone.storage import keys, signing, storage_for
from tests.helpers import deciding, make_dump

pytestmark = pytest.mark.django_db(transaction=True)

RESTORE = reverse("admin:pgclone_restore")
CONDITION = ["is_staff", "is_active", "password usable"]
COUNTED = (
    "accounts of public.auth_user with is_staff and is_active and password usable, "
    "counted in the dump when it was made"
)
SCRUBBED = deciding({"scrub": {"auth.User": {"email": "email"}}})  # password: unusable_password
KEPT = {"subset": {"auth.User": {"where": "username LIKE 'kept%'"}}}


def manifest_of(location: str, key: str) -> dict:
    return storage_for(location).read_manifest(keys.parse_key(key))


def rewrite_manifest(location: str, key: str, manifest: dict) -> None:
    Path(location, f"{key}.json").write_text(json.dumps(manifest))


def staff(username: str, **fields) -> User:
    return User.objects.create_user(username, password="s3cret-pass", is_staff=True, **fields)


def restorer() -> Client:
    """A user made after the dumps (so in none of them) who may restore."""
    user = staff("restorer")
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_job", "restore_database"])
    )
    client = Client()
    client.force_login(user)
    return client


def form(client: Client, key: str) -> str:
    return client.get(RESTORE, {"key": key, "database": "default"}).content.decode()


def restore_own_database(client: Client, key: str, name: str) -> str:
    data = {"key": key, "database": "default", "config": "default", "confirm": name}
    return client.post(RESTORE, data).content.decode()


def dump(config: str) -> str:
    job = api.dump(config=config, inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job.dump_key


def test_a_dump_counts_the_active_staff_accounts_with_a_usable_password(local_location):
    staff("admin")
    staff("former", is_active=False)
    User.objects.create_user("customer", password="s3cret-pass")  # not staff
    unusable = staff("no-password")
    unusable.set_unusable_password()  # "!" and 40 random characters
    unusable.save()
    staff("empty-password")
    User.objects.filter(username="empty-password").update(password="")

    key = make_dump("counted", local_location)

    assert manifest_of(local_location, key)["accounts"] == {
        "table": "public.auth_user",
        "condition": CONDITION,
        "count": 1,
        "unusable_password": 2,
    }


def test_a_dump_that_leaves_the_users_out_holds_no_account(local_location):
    staff("admin")

    job = api.dump(exclude_models=["auth.User"], inline=True)

    assert job.status == Job.Status.SUCCEEDED, job.error
    recorded = manifest_of(local_location, job.dump_key)["accounts"]
    assert recorded["count"] == 0 and recorded["unusable_password"] == 0


def test_a_dump_whose_only_staff_account_is_inactive_shows_0_and_is_refused(
    local_location, test_database_name
):
    staff("former", is_active=False)
    key = make_dump("inactive-only", local_location)
    client = restorer()

    page = form(client, key)
    answer = restore_own_database(client, key, test_database_name)

    assert f"0 ({COUNTED})" in page and 'id="pgclone-accounts" class="errors"' in page
    assert (
        f"Refused: restoring {key} into &#x27;{test_database_name}&#x27;, the database this "
        "admin runs on, would leave no account that can sign in to the admin"
    ) in answer
    assert not Job.objects.filter(kind=Job.Kind.RESTORE).exists()


def test_a_dump_with_an_active_staff_account_shows_1_and_is_not_refused(
    local_location, test_database_name
):
    staff("admin")
    key = make_dump("one-admin", local_location)
    client = restorer()

    page = form(client, key)
    answer = restore_own_database(client, key, "not-the-name")  # only the typing is wrong

    assert f"1 ({COUNTED})" in page and 'class="errors"' not in page
    assert f"Type {test_database_name} exactly to confirm the restore." in answer
    assert "Refused:" not in answer
    assert not Job.objects.filter(kind=Job.Kind.RESTORE).exists()


def test_a_scrubbed_dump_has_no_account_that_can_sign_in_by_password_and_says_why(
    settings, local_location, test_database_name
):
    settings.PGCLONE_DUMP_CONFIGS = {"scrubbed": SCRUBBED}
    staff("admin")
    key = dump("scrubbed")
    client = restorer()

    recorded = manifest_of(local_location, key)["accounts"]
    page = form(client, key)
    answer = restore_own_database(client, key, test_database_name)

    assert recorded == {
        "table": "public.auth_user", "condition": CONDITION, "count": 0, "unusable_password": 1,
    }  # fmt: skip
    why = (
        f"0 ({COUNTED}; 1 more would, but its password is unusable (a scrubbed dump makes "
        "every password unusable unless its config keeps them))"
    )
    assert why in page
    assert "would leave no account that can sign in to the admin" in answer
    assert "its password is unusable (a scrubbed dump" in answer
    assert "(`manage.py changepassword`)" in answer
    assert not Job.objects.filter(kind=Job.Kind.RESTORE).exists()


def test_a_subset_dump_counts_the_accounts_it_kept_not_the_sources(settings, local_location):
    settings.PGCLONE_DUMP_CONFIGS = {"kept": KEPT}
    staff("kept-admin")
    staff("left-admin")  # active staff in the source, not in the dump
    staff("kept-former", is_active=False)

    key = dump("kept")

    manifest = manifest_of(local_location, key)
    assert manifest["subset"] and manifest["plan"]["rows"]["public.auth_user"] == 2
    assert manifest["accounts"]["count"] == 1 and manifest["accounts"]["unusable_password"] == 0


def test_a_dump_made_before_accounts_were_counted_says_it_shows_the_rows(
    local_location, test_database_name
):
    """A manifest without ``accounts`` (an older pgclone's): the form falls back to
    the user table's rows, and says so."""
    staff("former", is_active=False)
    key = make_dump("older", local_location)
    manifest = manifest_of(local_location, key)
    del manifest["accounts"]
    rewrite_manifest(local_location, key, manifest)
    client = restorer()

    page = form(client, key)

    assert (
        "1 (rows of auth_user, from the dump&#x27;s table counts: the dump is older than "
        "pgclone&#x27;s count of the accounts that could sign in)"
    ) in page
    answer = restore_own_database(client, key, "not-the-name")
    assert "Refused:" not in answer  # rows are there: it can't tell, as before


def test_the_count_is_signed_and_older_signed_dumps_still_check(settings, local_location):
    settings.PGCLONE_SIGNING_KEY = "pgclone-test-accounts-signing-key"
    staff("former", is_active=False)
    key = make_dump("signed", local_location)
    manifest = manifest_of(local_location, key)
    assert manifest["accounts"]["count"] == 0 and manifest["signature"]
    client = restorer()

    # Raised by whoever can write to the storage, to get past the refusal: the signature breaks.
    rewrite_manifest(
        local_location, key, {**manifest, "accounts": {**manifest["accounts"], "count": 5}}
    )
    assert "its manifest&#x27;s signature does not match" in form(client, key)

    # Signed by a pgclone that did not count them yet: it checks, and the form falls back.
    older = {name: value for name, value in manifest.items() if name != "accounts"}
    del older["signature"], older["signing_key_id"]
    rewrite_manifest(local_location, key, signing.sign(older))
    (info,) = storage_for(local_location).infos()
    assert info.signed and not info.damaged
    assert "1 (rows of auth_user, from the dump" in form(client, key)
