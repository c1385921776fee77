"""Manifest signatures (pgclone.signing) and the settings checks that go with them."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from pgclone import checks, signing
from pgclone.exceptions import DumpDamaged

KEY = "shop/20261123T230321.482913Z.default.dump"
SECRET = "a-long-random-secret"
MISMATCH = "signature does not match: it was changed after it was made, or signed with another key"


def manifest() -> dict[str, Any]:
    return {"key": KEY, "size": 1234, "raw_size": 5678, "sha256": "ab" * 32, "config": "default"}


@pytest.fixture
def signing_key(settings: Any) -> str:
    settings.PGCLONE_SIGNING_KEY = SECRET
    return SECRET


def test_the_signature_is_an_hmac_of_the_canonical_json(signing_key: str) -> None:
    signed = signing.sign(manifest())
    body = json.dumps(manifest(), sort_keys=True, separators=(",", ":")).encode()
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert signed == {**manifest(), "signature": expected}
    assert SECRET not in json.dumps(signed)
    signing.check(KEY, signed)  # no error
    signing.check(KEY, dict(reversed(list(signed.items()))))  # field order does not matter


def test_without_a_key_nothing_is_signed_or_checked(settings: Any) -> None:
    settings.PGCLONE_SIGNING_KEY = None
    assert signing.sign(manifest()) == manifest()
    signing.check(KEY, manifest())
    signing.check(KEY, {**manifest(), "signature": "0" * 64})


@pytest.mark.parametrize(
    "change",
    [
        {"sha256": "cd" * 32},
        {"size": 1235},
        {"raw_size": 1},
        {"config": "nightly"},
        {"extra": "field"},
    ],
)
def test_any_change_breaks_the_signature(signing_key: str, change: dict[str, Any]) -> None:
    signed = signing.sign(manifest())
    with pytest.raises(DumpDamaged, match=MISMATCH):
        signing.check(KEY, {**signed, **change})


@pytest.mark.parametrize("bad", ["0" * 64, "", "é" * 64, 42, "not hex"])
def test_a_wrong_signature_is_refused(signing_key: str, bad: Any) -> None:
    with pytest.raises(DumpDamaged, match=MISMATCH) as refused:
        signing.check(KEY, {**manifest(), "signature": bad})
    assert SECRET not in str(refused.value)


def test_another_key_is_refused(settings: Any) -> None:
    settings.PGCLONE_SIGNING_KEY = "another-secret"
    signed = signing.sign(manifest())
    settings.PGCLONE_SIGNING_KEY = SECRET
    with pytest.raises(DumpDamaged, match=MISMATCH):
        signing.check(KEY, signed)


def test_unsigned_is_refused_unless_allowed(signing_key: str, settings: Any) -> None:
    with pytest.raises(DumpDamaged, match="is not signed, and PGCLONE_SIGNING_KEY is set"):
        signing.check(KEY, manifest())
    settings.PGCLONE_ALLOW_UNSIGNED = True
    signing.check(KEY, manifest())
    with pytest.raises(DumpDamaged, match=MISMATCH):  # a wrong one never is
        signing.check(KEY, {**manifest(), "signature": "0" * 64})


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
    assert not _ids() & {"pgclone.E007", "pgclone.E008", "pgclone.E009"}
