"""Typed job options and manifests: what is written reads back, and what older
(or newer) pgclone versions wrote still reads."""

from __future__ import annotations

import json
from pathlib import Path

from pgclone.payloads import DumpOptions, Manifest, RestoreOptions, Source
from pgclone.storage import keys, signing

FIXTURE = (
    Path(__file__).resolve().parent.parent
    / "fixtures/dumps/pgclone_fixture_src/20261125T194134.731221Z.default.dump.json"
)


def test_options_round_trip_through_json():
    dump = DumpOptions(
        config="safe", database="default", database_name="shop",
        exclude_models=("auth.User",), pre_dump_hooks=("clearsessions",),
        storage_location="/srv/dumps",
    )  # fmt: skip
    restore = RestoreOptions(
        config="default", database="default", database_name="shop",
        pre_swap_hooks=("migrate",), reversible=True,
        source=Source(type="dump", key="shop/20260101T000000.000000Z.default.dump", label="shop"),
        storage_location="s3://bucket/dumps",
    )  # fmt: skip
    for options in (dump, restore):
        stored = json.loads(json.dumps(options.to_dict()))
        assert type(options).from_dict(stored) == options
        assert stored["version"] == 1


def test_options_of_a_job_refused_before_resolving_read_as_empty():
    """A job that failed at acceptance keeps only what was asked."""
    asked = {"requested": {"config": "nope"}}
    assert DumpOptions.from_dict(asked).storage_location == ""
    assert RestoreOptions.from_dict(asked).source is None


def test_a_manifest_written_before_versions_reads_as_version_1():
    stored = json.loads(FIXTURE.read_text())
    assert "version" not in stored

    manifest = Manifest.from_dict(stored)

    assert manifest.version == 1 and manifest.size == 10616 and manifest.raw_size == 70299
    assert manifest.format == "postgresql-custom" and not manifest.signed


def test_fields_a_newer_pgclone_adds_are_kept_and_stay_signed(settings):
    settings.PGCLONE_SIGNING_KEY = "k" * 32
    written = Manifest(
        key="shop/20260101T000000.000000Z.default.dump", database="shop", config="default",
        created="2026-01-01T00:00:00+00:00", size=10, sha256="0" * 64, raw_size=20,
    ).to_dict()  # fmt: skip
    from_newer = signing.sign({**written, "encrypted": {"recipients": ["age1…"]}})

    read = Manifest.from_dict(from_newer)

    assert read.extra == {"encrypted": {"recipients": ["age1…"]}} and read.signed
    assert read.to_dict() == from_newer  # nothing lost or changed: the signature still holds
    signing.check(keys.parse_key(read.key), read.to_dict())


def test_the_accounts_count_is_kept_and_signed_and_older_manifests_read_as_before(settings):
    settings.PGCLONE_SIGNING_KEY = "k" * 32
    written = Manifest(
        key="shop/20260101T000000.000000Z.default.dump", database="shop", config="default",
        created="2026-01-01T00:00:00+00:00", size=10, sha256="0" * 64, raw_size=20,
    ).to_dict()  # fmt: skip
    older = signing.sign(written)  # as a pgclone that did not count the accounts signed it
    accounts = {"table": "public.auth_user", "condition": ["is_staff"], "count": 2}
    counted = signing.sign({**written, "accounts": accounts})

    assert "accounts" not in written and Manifest.from_dict(older).accounts is None
    assert Manifest.from_dict(older).to_dict() == older  # no "accounts": null added
    assert Manifest.from_dict(counted).accounts == accounts
    assert Manifest.from_dict(counted).to_dict() == counted
    for manifest in (older, counted):
        signing.check(keys.parse_key(manifest["key"]), Manifest.from_dict(manifest).to_dict())
    raised = {**counted, "accounts": {**accounts, "count": 3}}
    assert signing.signature_of(raised) is signing.Signature.MISMATCH


def test_the_pre_data_checksum_is_signed_and_older_manifests_read_without_it(settings):
    settings.PGCLONE_SIGNING_KEY = "k" * 32
    fields = {
        "key": "shop/20260101T000000.000000Z.default.dump", "database": "shop",
        "config": "default", "created": "2026-01-01T00:00:00+00:00", "size": 10,
        "sha256": "0" * 64,
    }  # fmt: skip
    older = signing.sign(Manifest(**fields).to_dict())
    named = signing.sign(Manifest(**fields, pre_data_sha256="1" * 64).to_dict())

    assert "pre_data_sha256" not in older and Manifest.from_dict(older).pre_data_sha256 is None
    assert Manifest.from_dict(older).to_dict() == older
    assert Manifest.from_dict(named).pre_data_sha256 == "1" * 64
    changed = {**named, "pre_data_sha256": "2" * 64}  # a storage writer's, for its own SQL
    assert signing.signature_of(changed) is signing.Signature.MISMATCH
