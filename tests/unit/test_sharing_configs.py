"""The scrub and subset sections of dump configs: parsed and checked at
startup, no database needed (what they decide on a database's columns:
tests/unit/test_deciding.py, tests/integration/test_decisions.py)."""

from __future__ import annotations

import hashlib

import pytest

from pgclone import configs
from pgclone.checks import check_settings
from pgclone.sharing import scrub
from pgclone.sharing import sections as sharing

SAFE = {
    "scrub": {
        "auth.user": {"email": "email", "password": "unusable_password"},
        "testapp.Customer": {
            "notes": {"sql": "left(md5({column}), 8)"},
            "profile": [{"rule": "email", "path": ["contact", "email"]}],
        },
    },
    "subset": {"testapp.Order": {"percent": 10}},
}


def test_scrub_and_subset_are_parsed_into_typed_rules(settings):
    settings.PGCLONE_DUMP_CONFIGS = {"safe": SAFE, "plain": {}}
    safe = configs.dump_config("safe")
    assert safe.scrub[0] == sharing.FieldRules(
        "auth.User", "email", "email", (scrub.Rule("email"),)
    )
    assert safe.scrub[2].rules == (scrub.Rule("sql", sql="left(md5({column}), 8)"),)
    assert safe.scrub[3].rules == (scrub.Rule("email", path=("contact", "email")),)
    assert safe.subset == (sharing.SubsetRoot("testapp.Order", percent=10),)
    assert configs.dump_config("plain").scrub is None  # no section: nothing asked
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"require_scrubbed": True}}
    assert configs.restore_config().require_scrubbed is True


def test_the_digest_follows_the_rules_not_their_order(settings):
    settings.PGCLONE_DUMP_CONFIGS = {"safe": SAFE}
    safe = configs.dump_config("safe")
    assert sharing.digest(safe.scrub, safe.subset) == sharing.digest(
        tuple(reversed(safe.scrub)), safe.subset
    )
    assert sharing.digest(safe.scrub, safe.subset) != sharing.digest(safe.scrub, ())


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"scrub": {"shop.Nothing": {}}}, "unknown model 'shop.Nothing'"),
        ({"scrub": {"auth.User": {"emial": "email"}}}, "auth.User has no field 'emial'"),
        ({"scrub": {"auth.User": {"email": "mail"}}}, "unknown rule 'mail'; the rules are"),
        ({"scrub": {"testapp.OrderItem": {"quantity": "email"}}}, "'email' writes text"),
        ({"scrub": {"testapp.OrderItem": {"quantity": "unusable_password"}}}, "writes text"),
        ({"scrub": {"testapp.Customer": {"name": "null"}}}, "can't be NULL"),
        ({"scrub": {"testapp.Customer": {"email": "empty"}}}, "is unique: 'empty'"),
        ({"scrub": {"testapp.Customer": {"phone": "unusable_password"}}}, "needs 41 characters"),
        ({"scrub": {"testapp.Customer": {"notes": {"sql": "md5(x)"}}}}, "using {column}"),
        (
            {"scrub": {"testapp.Customer": {"name": {"rule": "name", "path": ["a"]}}}},
            "needs a JSON",
        ),
        ({"scrub": {"testapp.Order": {"customer": "hash"}}}, "is a key (primary or foreign)"),
        ({"scrub": {"auth.User": ["email"]}}, "must be a dict of field names"),
        ({"subset": {"testapp.Order": {"percent": 0}}}, "'percent'] must be a number above 0"),
        ({"subset": {"testapp.Order": {"percent": 101}}}, "'percent'] must be a number above 0"),
        ({"subset": {"testapp.Order": {"percent": 5, "where": "id > 1"}}}, "exactly one"),
        ({"subset": {"testapp.Order": {"where": "true; DROP TABLE x"}}}, "(no ';')"),
        ({"subset": {"testapp.Nope": {"percent": 5}}}, "unknown model 'testapp.Nope'"),
    ],
)
def test_each_mistake_is_a_startup_error_naming_where_it_is(settings, section, message):
    settings.PGCLONE_DUMP_CONFIGS = {"x": section}
    errors = [m.msg for m in check_settings() if m.id == "pgclone.E003"]
    assert len(errors) == 1 and message in errors[0], errors
    assert errors[0].startswith("PGCLONE_DUMP_CONFIGS['x']['")


def test_outputs_must_fit_the_column_and_keep_a_unique_one_unique():
    email = scrub.Column("email", "text", "character varying", max_length=30)
    assert scrub.problem((scrub.Rule("email"),), email) is None
    unique = scrub.Column("email", "text", "character varying", max_length=30, unique=True)
    assert "needs 34 characters (unique" in scrub.problem((scrub.Rule("email"),), unique)
    assert "not for a unique column" in scrub.problem((scrub.Rule("ip"),), unique)
    assert scrub.problem((scrub.Rule("hash"),), scrub.Column("id", "uuid", "uuid")) is None


def test_the_session_key_makes_the_server_compute_the_keyed_digest():
    setting = bytes.fromhex(scrub.key_setting("a key"))
    value = "person@réel.example"
    by_server = hashlib.sha512(setting + value.encode()).digest()  # what scrub.digest() asks
    assert by_server[:32] == scrub.keyed_digest("a key", value)
    assert scrub.keyed_digest("a key", value) != scrub.keyed_digest("another", value)
    assert setting == hashlib.sha256(b"a key").digest() and b"a key" not in setting
    assert scrub.key_id("a key") != scrub.key_id("another") and len(scrub.key_id("a key")) == 16


def test_the_key_defaults_to_one_derived_from_the_secret_key(settings):
    from pgclone import conf

    derived = conf.scrub_key()
    assert derived != settings.SECRET_KEY and len(derived) == 64
    settings.PGCLONE_SCRUB_KEY = "set apart"
    assert conf.scrub_key() == "set apart"


def test_a_dump_with_scrub_or_subset_is_accepted(settings):
    from pgclone.steps import options

    settings.PGCLONE_DUMP_CONFIGS = {"safe": SAFE, "empty": {"scrub": {}}}
    for name in ("safe", "empty"):
        assert options.resolve_dump_options(config=name).config == name
