"""What a scrubbing config decides on a database's columns, without the database:
the catalog's columns come in as data (tests/integration/test_decisions.py reads
a real one)."""

from __future__ import annotations

import pytest

from pgclone import configs, payloads
from pgclone.exceptions import ConfigurationError
from pgclone.pg.catalog import DataColumn
from pgclone.sharing import deciding, decisions, personal, scrub


def column(table: str, name: str, type_name: str = "text", base: str = "text", *, key=False):
    category = "S" if base in ("text", "varchar", "bpchar", "citext", "name") else "U"
    return DataColumn("public", table, name, type_name, base, category, key)


COLUMNS = [
    column("shop_customer", "id", "bigint", "int8"),
    column("shop_customer", "email", "character varying(254)", "varchar"),
    column("shop_customer", "tags", "text[]", "text"),  # an array: its element's type
    column("shop_customer", "seen_from", "inet[]", "inet"),
    column("shop_customer", "born", "date", "date"),
    column("legacy_contacts", "mail", "public.email_domain", "citext"),  # a domain over citext
    column("legacy_contacts", "blob", "bytea", "bytea"),
    column("legacy_contacts", "code", "text", key=True),
    column("django_migrations", "name", "character varying(255)", "varchar"),
]
MODELS = {("public", "shop_customer"): ("shop.Customer", {"id": "id", "email": "email"})}


def test_every_column_that_can_hold_text_needs_a_decision_named_as_the_user_writes_it():
    found = deciding.review(COLUMNS, deciding.Asked(), MODELS)
    assert [named.name for named in found.undecided] == [
        "shop.Customer.email",
        "public.shop_customer.tags",
        "public.shop_customer.seen_from",
        "public.legacy_contacts.mail",
        "public.legacy_contacts.blob",
        "public.legacy_contacts.code",
    ]
    assert {named.column.name for named in found.kept_by_default} == {"id", "born"}
    assert found.kept_by_pgclone == ("public.django_migrations",)


def test_a_rule_a_kept_table_or_a_table_left_out_decides():
    asked = deciding.Asked(
        ruled={("public", "shop_customer", c): '"keep"' for c in ("email", "tags", "seen_from")},
        kept=frozenset({("public", "legacy_contacts")}),
    )
    found = deciding.review(COLUMNS, asked, MODELS)
    assert found.undecided == ()
    left_out = deciding.Asked(
        ruled=asked.ruled, left_out=frozenset({("public", "legacy_contacts")})
    )
    other = deciding.review(COLUMNS, left_out, MODELS)
    assert other.undecided == () and other.decided["public.legacy_contacts"] == "left out"
    assert found.digest != other.digest  # the manifest tells the two apart
    assert found.digest == deciding.review(COLUMNS, asked, MODELS).digest


def test_the_skeleton_keeps_the_config_and_adds_a_decision_per_undecided_column():
    found = deciding.review(COLUMNS, deciding.Asked(), MODELS)
    text = deciding.skeleton(
        found.undecided,
        {"shop.Customer": {"born": "null"}},
        {"public.audit": "keep"},
        {"shop.Customer.email": "email", "public.legacy_contacts.code": "hash"},
    )
    pasted = eval("{" + text + "}")  # noqa: S307 (the text is Python to paste)
    assert pasted["scrub"] == {"shop.Customer": {"born": "null", "email": "email"}}
    assert pasted["tables"] == {
        "public.audit": "keep",
        "public.shop_customer": {"tags": "keep", "seen_from": "keep"},
        # a key is copied as it is: no rule suggested for it
        "public.legacy_contacts": {"mail": "keep", "blob": "keep", "code": "keep"},
    }
    assert '"email": "email",  # new: character varying(254)' in text
    assert "a key: copied as it is" in text


def test_tables_and_exclude_tables_name_one_table_each(settings):
    settings.PGCLONE_DUMP_CONFIGS = {
        "safe": {
            "scrub": {},
            "tables": {"public.legacy": {"mail": "email", "note": "keep"}, "x.audit": "keep"},
            "exclude_tables": ["public.cache"],
        }
    }
    found = configs.dump_config("safe").sharing.decisions
    assert found.named("public", "legacy").rules() == {
        "mail": (scrub.Rule("email"),),
        "note": (scrub.Rule("keep"),),
    }
    assert found.named("x", "audit").whole and found.exclude_tables == (("public", "cache"),)
    for bad, message in (
        ({"scrub": {}, "tables": {"auth.*": "keep"}}, "one table per name, no pattern"),
        ({"scrub": {}, "tables": {"legacy": "keep"}}, "is not a table name"),
        ({"scrub": {}, "tables": {"public.t": "empty"}}, "must be 'keep'"),
        ({"scrub": {}, "tables": {"public.t": {"c": "nope"}}}, "unknown rule"),
        ({"tables": {"public.t": "keep"}}, "has no 'scrub' section"),
        ({"exclude_tables": "public.t"}, "must be a list"),
        ({"scrub": {}, "tables": {"public.t": "keep"}, "exclude_tables": ["public.t"]}, "both"),
    ):
        settings.PGCLONE_DUMP_CONFIGS = {"bad": bad}
        with pytest.raises(ConfigurationError, match=message.replace("*", r"\*")):
            configs.dump_config("bad")


def test_a_skeleton_suggests_a_rule_from_the_name_only():
    assert personal.guess("email") == personal.guess("contact_email") == "email"
    assert personal.guess("first_name") == "first_name"
    assert personal.guess("api_token") == "hash" and personal.guess("password") == (
        "unusable_password"
    )
    assert personal.guess("status") is None


@pytest.mark.parametrize(
    ("manifest", "scrubbed"),
    [
        ({"scrubbed": True, "plan": {"tables": ["public.auth_user"]}}, True),
        ({"scrubbed": True, "plan": {"tables": []}}, False),  # "scrub": {} before
        ({"scrubbed": True}, False),
        ({"scrubbed": "yes", "plan": {"tables": ["public.t"]}}, False),
        ({"scrubbed": False, "plan": {"tables": ["public.t"]}}, False),  # a subset alone
    ],
)
def test_a_manifest_counts_as_scrubbed_only_when_its_plan_names_a_table(manifest, scrubbed):
    assert payloads.counts_as_scrubbed(manifest) is scrubbed
    full = {"key": "k", "database": "d", "config": "c", "created": "t", "size": 1, "sha256": "s"}
    assert payloads.counts_as_scrubbed(payloads.Manifest.from_dict({**full, **manifest})) is (
        scrubbed
    )


def test_the_digest_of_decisions_is_stable_and_records_the_rules_version():
    assert decisions.digest({"a.b.c": "keep"}) == decisions.digest({"a.b.c": "keep"})
    assert decisions.digest({"a.b.c": "keep"}) != decisions.digest({"a.b.c": '"email"'})
