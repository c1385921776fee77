"""Where only scrubbed data may arrive (pgclone.sharing.requirement): which dumps and
which databases on the server a restore there takes, and the system check that
goes with it. The same, end to end, in tests/integration/test_require_scrubbed.py."""

from __future__ import annotations

from typing import Any

import pytest

from pgclone import checks
from pgclone.exceptions import UnscrubbedDumpRefused
from pgclone.payloads import Source
from pgclone.sharing import requirement
from pgclone.storage import keys, signing

KEY = keys.parse_key("shop/20261123T230321.482913Z.safe.dump")
SECRET = "a-long-random-secret-for-scrubbed-dumps"


def manifest(**fields: Any) -> dict[str, Any]:
    """A manifest; ``scrubbed=True`` with the plan a scrubbed dump records (a table
    pgclone wrote: pgclone.payloads.counts_as_scrubbed)."""
    if fields.get("scrubbed") is True:
        fields.setdefault("plan", {"tables": ["public.shop_customer"]})
    return {
        "key": str(KEY),
        "database": KEY.database,
        "config": KEY.config,
        "created": KEY.created.isoformat(),
        "size": 1234,
        "sha256": "ab" * 32,
        **fields,
    }


@pytest.fixture
def strict(settings: Any) -> Any:
    settings.PGCLONE_REQUIRE_SCRUBBED = True
    settings.PGCLONE_SIGNING_KEY = SECRET
    return settings


def test_a_signed_scrubbed_dump_is_taken(strict: Any) -> None:
    assert requirement.dump_refusal(KEY, signing.sign(manifest(scrubbed=True))) == ""


def test_an_unscrubbed_dump_is_refused_even_signed(strict: Any) -> None:
    refusal = requirement.dump_refusal(KEY, signing.sign(manifest(scrubbed=False)))
    assert f"Dump {KEY} is not scrubbed" in refusal
    assert "PGCLONE_REQUIRE_SCRUBBED is on here" in refusal


@pytest.mark.parametrize("allow_unsigned", [False, True])
def test_a_manifest_that_says_scrubbed_without_a_signature_is_refused(
    strict: Any, allow_unsigned: bool
) -> None:
    """What a storage writer without the key can do: write the field, not sign it."""
    strict.PGCLONE_ALLOW_UNSIGNED = allow_unsigned
    refusal = requirement.dump_refusal(KEY, manifest(scrubbed=True))
    assert "says it is scrubbed, but its manifest is not signed with PGCLONE_SIGNING_KEY" in refusal
    assert "whatever PGCLONE_ALLOW_UNSIGNED says" in refusal


def test_scrubbed_written_into_a_signed_manifest_breaks_its_signature(strict: Any) -> None:
    edited = {
        **signing.sign(manifest(scrubbed=False)),
        "scrubbed": True,
        "plan": {"tables": ["public.shop_customer"]},
    }
    refusal = requirement.dump_refusal(KEY, edited)
    assert "is not signed with PGCLONE_SIGNING_KEY" in refusal
    assert "signature does not match" in refusal


def test_without_a_signing_key_nothing_counts_as_scrubbed(settings: Any) -> None:
    settings.PGCLONE_REQUIRE_SCRUBBED = True
    settings.PGCLONE_SIGNING_KEY = None
    refusal = requirement.dump_refusal(KEY, manifest(scrubbed=True))
    assert "no PGCLONE_SIGNING_KEY is set here" in refusal


def test_a_restore_config_requires_it_of_its_own_restores_only(settings: Any) -> None:
    settings.PGCLONE_SIGNING_KEY = SECRET
    source = Source(type="dump", key=str(KEY), label=str(KEY))
    requirement.refuse(source, manifest(), "shop", "default", configured=False)  # nothing asked

    with pytest.raises(UnscrubbedDumpRefused, match="the restore config 'staging' has req"):
        requirement.refuse(source, manifest(), "shop", "staging", configured=True)
    requirement.refuse(source, signing.sign(manifest(scrubbed=True)), "shop", "staging", True)


@pytest.mark.parametrize(
    ("label", "name", "taken"),
    [
        (":previous", "shop__previous", True),
        (":current", "shop__current", True),
        (":other", "other", False),
        (":shop__previous", "shop__previous", False),  # named as a database, not as the undo
        (":previous", "other__previous", False),  # another database's copy
    ],
)
def test_of_the_databases_on_the_server_only_the_live_ones_copies_are_taken(
    strict: Any, label: str, name: str, taken: bool
) -> None:
    source = Source(type="database", name=name, label=label)
    if taken:
        requirement.refuse(source, None, "shop", "default", configured=False)
        return
    with pytest.raises(UnscrubbedDumpRefused, match="is a database on the server, not a dump"):
        requirement.refuse(source, None, "shop", "default", configured=False)


def _errors() -> dict[str, str]:
    return {message.id: message.msg for message in checks.check_require_scrubbed()}


def test_requiring_scrubbed_dumps_without_a_signing_key_is_a_system_check_error(
    settings: Any,
) -> None:
    settings.PGCLONE_SIGNING_KEY = None
    settings.PGCLONE_REQUIRE_SCRUBBED = True
    settings.PGCLONE_RESTORE_CONFIGS = {
        "staging": {"require_scrubbed": True},
        "other": {"pre_swap_hooks": []},
    }

    found = _errors()

    assert set(found) == {"pgclone.E040", "pgclone.E041"}
    assert "PGCLONE_REQUIRE_SCRUBBED is on, but PGCLONE_SIGNING_KEY" in found["pgclone.E040"]
    assert "PGCLONE_RESTORE_CONFIGS['staging'] has require_scrubbed" in found["pgclone.E041"]


def test_with_a_signing_key_requiring_scrubbed_dumps_passes_the_check(strict: Any) -> None:
    strict.PGCLONE_RESTORE_CONFIGS = {"staging": {"require_scrubbed": True}}
    assert _errors() == {}
    strict.PGCLONE_SIGNING_KEY = None
    strict.PGCLONE_REQUIRE_SCRUBBED = False
    strict.PGCLONE_RESTORE_CONFIGS = {"staging": {"pre_swap_hooks": []}}
    assert _errors() == {}
