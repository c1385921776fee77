"""Manifest signatures (pgclone.storage.signing), what binds them to where they are stored,
and the settings checks that go with them."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import pytest

from pgclone import checks
from pgclone.exceptions import DumpDamaged
from pgclone.storage import keys, signing

KEY = keys.parse_key("shop/20261123T230321.482913Z.default.dump")
SECRET = "a-long-random-secret"
SECRET_ID = hashlib.sha256(SECRET.encode()).hexdigest()[:8]
MISMATCH = "signature does not match: it was changed after it was made, or signed with another key"
NOW = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)


def manifest(key: keys.DumpKey = KEY) -> dict[str, Any]:
    return {
        "key": str(key),
        "database": key.database,
        "config": key.config,
        "created": key.created.isoformat(),
        "size": 1234,
        "raw_size": 5678,
        "sha256": "ab" * 32,
    }


@pytest.fixture
def signing_key(settings: Any) -> str:
    settings.PGCLONE_SIGNING_KEY = SECRET
    return SECRET


def test_the_signature_is_an_hmac_of_the_canonical_json_with_the_key_id(signing_key: str) -> None:
    signed = signing.sign(manifest())
    body = {**manifest(), "signing_key_id": SECRET_ID}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    expected = hmac.new(SECRET.encode(), canonical, hashlib.sha256).hexdigest()
    assert signed == {**body, "signature": expected}
    assert SECRET not in json.dumps(signed)
    assert signing.examine(KEY, signed, NOW) == ("", True)
    signing.check(KEY, dict(reversed(list(signed.items()))), NOW)  # field order does not matter


def test_without_a_key_nothing_is_signed_or_checked(settings: Any) -> None:
    settings.PGCLONE_SIGNING_KEY = None
    assert signing.sign(manifest()) == manifest()
    assert signing.examine(KEY, manifest(), NOW) == ("", False)
    signing.check(KEY, {**manifest(), "signature": "0" * 64}, NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"sha256": "cd" * 32},
        {"size": 1235},
        {"raw_size": 1},
        {"config": "nightly"},
        {"extra": "field"},
        {"signing_key_id": None},  # written as before key ids: every key is tried, none fits
    ],
)
def test_any_change_breaks_the_signature(signing_key: str, change: dict[str, Any]) -> None:
    signed = signing.sign(manifest())
    with pytest.raises(DumpDamaged, match=MISMATCH):
        signing.check(KEY, {**signed, **change}, NOW)


@pytest.mark.parametrize("bad", ["0" * 64, "", "é" * 64, 42, "not hex"])
def test_a_wrong_signature_is_refused(signing_key: str, bad: Any) -> None:
    with pytest.raises(DumpDamaged, match=MISMATCH) as refused:
        signing.check(KEY, {**manifest(), "signature": bad}, NOW)
    assert SECRET not in str(refused.value)


def test_another_key_is_refused_by_its_key_id(settings: Any) -> None:
    settings.PGCLONE_SIGNING_KEY = "another-secret"
    signed = signing.sign(manifest())
    settings.PGCLONE_SIGNING_KEY = SECRET
    with pytest.raises(DumpDamaged) as refused:
        signing.check(KEY, signed, NOW)
    assert f"key id {signing.key_id('another-secret')!r}" in str(refused.value)
    assert "Add the key it was signed with to PGCLONE_SIGNING_KEY_FALLBACKS" in str(refused.value)
    without_id = {**signed, "signing_key_id": None}
    del without_id["signing_key_id"]  # as signed before key ids: the signature no longer fits
    with pytest.raises(DumpDamaged, match=MISMATCH):
        signing.check(KEY, without_id, NOW)


def test_fallback_keys_check_what_they_signed_and_sign_nothing(settings: Any) -> None:
    settings.PGCLONE_SIGNING_KEY = "the-old-key"
    old = signing.sign(manifest())
    before_key_ids = {**manifest(), "signature": signing.signature(manifest(), "the-old-key")}
    settings.PGCLONE_SIGNING_KEY = SECRET
    settings.PGCLONE_SIGNING_KEY_FALLBACKS = ["some-other-key", "the-old-key"]
    assert signing.examine(KEY, old, NOW) == ("", True)
    assert signing.examine(KEY, before_key_ids, NOW) == ("", True)  # every key is tried
    assert signing.sign(manifest())["signing_key_id"] == SECRET_ID
    settings.PGCLONE_SIGNING_KEY_FALLBACKS = "the-old-key"  # a string: no fallback at all
    assert "key id" in signing.examine(KEY, old, NOW)[0]
    with pytest.raises(DumpDamaged, match="key id"):  # one letter of it is no key
        char = {**manifest(), "signing_key_id": signing.key_id("t")}
        signing.check(KEY, {**char, "signature": signing.signature(char, "t")}, NOW)


def test_unsigned_is_refused_unless_allowed(signing_key: str, settings: Any) -> None:
    with pytest.raises(DumpDamaged, match="is not signed, and PGCLONE_SIGNING_KEY is set"):
        signing.check(KEY, manifest(), NOW)
    settings.PGCLONE_ALLOW_UNSIGNED = True
    assert signing.examine(KEY, manifest(), NOW) == ("", False)
    with pytest.raises(DumpDamaged, match=MISMATCH):  # a wrong one never is
        signing.check(KEY, {**manifest(), "signature": "0" * 64}, NOW)


LATER = keys.parse_key("shop/20261123T230400.000000Z.default.dump")


@pytest.mark.parametrize(
    ("stored_under", "says"),
    [
        (LATER, f"key = {str(KEY)!r}, where it is stored says {str(LATER)!r}"),
        (
            keys.parse_key("other/20261123T230321.482913Z.default.dump"),
            "key = 'shop/20261123T230321.482913Z.default.dump', where it is stored says "
            "'other/20261123T230321.482913Z.default.dump'",
        ),
    ],
)
def test_a_signed_manifest_is_refused_under_another_key(
    signing_key: str, stored_under: keys.DumpKey, says: str
) -> None:
    signed = signing.sign(manifest())
    with pytest.raises(DumpDamaged) as refused:
        signing.check(stored_under, signed, NOW)
    assert f"Dump {stored_under} is refused: its signed manifest says {says}." in str(refused.value)
    assert "copied or renamed in the storage" in str(refused.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database", "other"),
        ("config", "nightly"),
        ("created", "2026-11-23T23:03:21+00:00"),
        ("created", "not a moment"),
        ("created", None),
        ("key", None),
    ],
)
def test_each_signed_field_of_the_location_is_checked(
    signing_key: str, field: str, value: Any
) -> None:
    fields = manifest()
    if value is None:
        del fields[field]
    else:
        fields[field] = value
    problem, _ = signing.examine(KEY, signing.sign(fields), NOW)
    assert f"its signed manifest says {field} = " in problem


def test_a_key_in_the_future_is_refused_signed_or_not(signing_key: str, settings: Any) -> None:
    signed = signing.sign(manifest())
    soon = KEY.created - dt.timedelta(minutes=4, seconds=59)
    assert signing.examine(KEY, signed, soon) == ("", True)  # clocks differ a little
    too_soon = KEY.created - dt.timedelta(minutes=5, seconds=1)
    problem, _ = signing.examine(KEY, signed, too_soon)
    assert "its key is timestamped 2026-11-23 23:03:21 UTC, more than 5 minutes after" in problem
    settings.PGCLONE_SIGNING_KEY = None
    assert "more than 5 minutes after" in signing.examine(KEY, manifest(), too_soon)[0]


def test_a_trial_record_signed_with_a_fallback_is_trusted(settings: Any) -> None:
    settings.PGCLONE_SIGNING_KEY = "the-old-key"
    record = signing.sign({"key": str(KEY), "outcome": "passed"})
    settings.PGCLONE_SIGNING_KEY = SECRET
    assert signing.record_problem(record).startswith("it was signed with a key this machine")
    settings.PGCLONE_SIGNING_KEY_FALLBACKS = ["the-old-key"]
    assert signing.record_problem(record) == ""


def _ids() -> set[str]:
    return {message.id for message in checks.check_settings()}


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("PGCLONE_S3_EXTRA_ARGS", [("ServerSideEncryption", "AES256")], "pgclone.E007"),
        ("PGCLONE_S3_EXTRA_ARGS", "AES256", "pgclone.E007"),
        ("PGCLONE_LOCAL_SOURCES", "staging", "pgclone.E008"),
        ("PGCLONE_LOCAL_SOURCES", ["staging", 3], "pgclone.E008"),
        ("PGCLONE_SIGNING_KEY", b"bytes", "pgclone.E009"),
        ("PGCLONE_SIGNING_KEY_FALLBACKS", "the-old-key", "pgclone.E012"),
        ("PGCLONE_SIGNING_KEY_FALLBACKS", ["the-old-key", b"bytes"], "pgclone.E012"),
        ("PGCLONE_SIGNING_KEY_FALLBACKS", [""], "pgclone.E012"),
    ],
)
def test_bad_security_settings_are_system_check_errors(
    settings: Any, setting: str, value: Any, error: str
) -> None:
    setattr(settings, setting, value)
    assert error in _ids()


def test_good_security_settings_pass_the_checks(settings: Any) -> None:
    settings.PGCLONE_S3_EXTRA_ARGS = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/x"}
    settings.PGCLONE_LOCAL_SOURCES = ["staging_copy"]
    settings.PGCLONE_SIGNING_KEY = SECRET
    settings.PGCLONE_SIGNING_KEY_FALLBACKS = ("the-old-key",)
    assert not _ids() & {"pgclone.E007", "pgclone.E008", "pgclone.E009", "pgclone.E012"}
