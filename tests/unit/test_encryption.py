"""Encryption settings and keys: recipients, identities (files, environment),
the checks that name mistakes, the manifest fields and ``keygen``."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyrage
import pytest
from django.core.management import call_command

from pgclone import configs, payloads
from pgclone.archive import encryption
from pgclone.checks import check_settings
from pgclone.exceptions import ConfigurationError, NoMatchingIdentity

IDENTITY = pyrage.x25519.Identity.generate()
SECRET = str(IDENTITY)
RECIPIENT = str(IDENTITY.to_public())
OTHER = str(pyrage.x25519.Identity.generate().to_public())


@pytest.fixture(autouse=True)
def no_identity_in_environment(monkeypatch):
    monkeypatch.delenv(encryption.IDENTITY_ENV, raising=False)


def identity_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pgclone.agekey"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def check_ids() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for message in check_settings():
        found.setdefault(message.id, []).append(message.msg)
    return found


def test_recipients_come_from_the_setting_or_the_config(settings):
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = [RECIPIENT, OTHER]
    settings.PGCLONE_DUMP_CONFIGS = {
        "default": {},
        "plain": {"encryption_recipients": []},
        "own": {"encryption_recipients": [OTHER]},
    }
    assert configs.recipients_of(configs.dump_config("default")) == (RECIPIENT, OTHER)
    assert configs.recipients_of(configs.dump_config("plain")) == ()
    assert configs.recipients_of(configs.dump_config("own")) == (OTHER,)


def test_a_malformed_recipient_is_a_system_check_error(settings):
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = [RECIPIENT, "age1notakey"]
    found = check_ids()
    assert len(found["pgclone.E010"]) == 1 and "'age1notakey'" in found["pgclone.E010"][0]
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = RECIPIENT  # a string, not a list
    assert "must be a list" in check_ids()["pgclone.E010"][0]

    settings.PGCLONE_ENCRYPTION_RECIPIENTS = []
    settings.PGCLONE_DUMP_CONFIGS = {"nightly": {"encryption_recipients": ["ssh-ed25519 AAAA"]}}
    found = check_ids()
    assert "pgclone.E010" not in found
    assert any("['encryption_recipients']" in text for text in found["pgclone.E003"])


def test_identities_from_a_file_with_comments_and_from_the_environment(
    settings, tmp_path, monkeypatch
):
    other = pyrage.x25519.Identity.generate()
    settings.PGCLONE_ENCRYPTION_IDENTITIES = [
        identity_file(tmp_path, f"# created: today\n# public key: {RECIPIENT}\n{SECRET}\n\n")
    ]
    monkeypatch.setenv(encryption.IDENTITY_ENV, str(other))
    assert encryption.public_keys(encryption.load_identities()) == [
        RECIPIENT,
        str(other.to_public()),
    ]
    matching = encryption.identities_for([OTHER, str(other.to_public())], "Dump x")
    assert encryption.public_keys(matching) == [str(other.to_public())]


def test_no_matching_identity_names_the_recipients(settings, tmp_path):
    with pytest.raises(NoMatchingIdentity, match="no identity is configured here") as info:
        encryption.identities_for([OTHER], "Dump db/k.dump")
    assert OTHER in str(info.value)

    settings.PGCLONE_ENCRYPTION_IDENTITIES = [identity_file(tmp_path, SECRET)]
    with pytest.raises(NoMatchingIdentity) as info:
        encryption.identities_for([OTHER], "Dump db/k.dump")
    assert OTHER in str(info.value) and f"those of {RECIPIENT}" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        (f"{SECRET}\nAGE-SECRET-KEY-1QQQQ\n", "Line 2 of the age identity file"),
        ("# only comments\n", "holds no identity"),
        (RECIPIENT, "Line 1 of the age identity file"),  # the public key by mistake
    ],
)
def test_a_malformed_identity_file_is_a_clear_error_and_a_warning(
    settings, tmp_path, content, expected
):
    settings.PGCLONE_ENCRYPTION_IDENTITIES = [identity_file(tmp_path, content)]
    with pytest.raises(ConfigurationError, match=expected) as info:
        encryption.load_identities()
    assert SECRET not in str(info.value) and "QQQQ" not in str(info.value)
    warnings = check_ids()["pgclone.W016"]
    assert len(warnings) == 1 and expected in warnings[0] and SECRET not in warnings[0]


def test_an_identity_file_others_can_read_is_a_warning(settings, tmp_path):
    path = identity_file(tmp_path, SECRET)
    settings.PGCLONE_ENCRYPTION_IDENTITIES = [path]
    assert "pgclone.W016" not in check_ids()
    os.chmod(path, 0o644)
    assert encryption.load_identities()  # still used: the warning says what to do
    (warning,) = check_ids()["pgclone.W016"]
    assert "mode 0644" in warning and f"chmod 600 {path}" in warning


def test_an_unreadable_identity_file_says_why(settings, tmp_path, monkeypatch):
    missing = tmp_path / "nowhere.agekey"
    settings.PGCLONE_ENCRYPTION_IDENTITIES = [str(missing)]
    with pytest.raises(ConfigurationError, match="No such file or directory"):
        encryption.load_identities()
    monkeypatch.setenv(encryption.IDENTITY_ENV, "not-a-key")
    settings.PGCLONE_ENCRYPTION_IDENTITIES = []
    with pytest.raises(ConfigurationError, match="PGCLONE_AGE_IDENTITY is not an age identity"):
        encryption.load_identities()


def test_manifests_without_encryption_read_and_write_as_before():
    old = {"key": "db/k.dump", "database": "db", "config": "default", "created": "x",
           "size": 10, "sha256": "a" * 64}  # fmt: skip
    manifest = payloads.Manifest.from_dict(old)
    assert not manifest.encrypted and manifest.recipients == ()
    written = manifest.to_dict()
    assert "encryption" not in written and "plaintext_sha256" not in written

    encrypted = payloads.Manifest.from_dict(
        {**old, "encryption": encryption.describe([RECIPIENT]), "plaintext_sha256": "b" * 64}
    )
    assert encrypted.encrypted and encrypted.recipients == (RECIPIENT,)
    assert encrypted.to_dict()["encryption"] == {"method": "age", "recipients": [RECIPIENT]}


def test_keygen_prints_an_identity_file_and_where_each_key_goes(tmp_path, settings):
    settings.PGCLONE_ENCRYPTION_RECIPIENTS = ["broken"]  # keygen is how this gets fixed
    out, err = io.StringIO(), io.StringIO()
    call_command("pgclone", "keygen", stdout=out, stderr=err)

    path = identity_file(tmp_path, out.getvalue())
    settings.PGCLONE_ENCRYPTION_IDENTITIES = [path]
    (identity,) = encryption.load_identities()
    recipient = str(identity.to_public())
    assert f"# public key: {recipient}" in out.getvalue()
    explanation = err.getvalue()
    assert recipient in explanation and str(identity) not in explanation
    for words in ("PGCLONE_ENCRYPTION_RECIPIENTS", "PGCLONE_ENCRYPTION_IDENTITIES",
                  "PGCLONE_AGE_IDENTITY", "chmod 600"):  # fmt: skip
        assert words in explanation
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_the_signature_covers_whom_a_dump_is_encrypted_to(settings):
    from pgclone.exceptions import DumpDamaged
    from pgclone.storage import keys, signing

    settings.PGCLONE_SIGNING_KEY = "pgclone-unit-signing-key"
    key = keys.parse_key("db/20261123T230321.482913Z.default.dump")
    manifest = signing.sign(
        {
            "key": str(key),
            "database": key.database,
            "config": key.config,
            "created": key.created.isoformat(),
            "size": 1,
            "sha256": "a" * 64,
            "plaintext_sha256": "b" * 64,
            "encryption": encryption.describe([RECIPIENT]),
        }
    )
    signing.check(key, manifest)
    swapped = {**manifest, "encryption": encryption.describe([OTHER])}
    with pytest.raises(DumpDamaged, match="signature does not match"):
        signing.check(key, swapped)
