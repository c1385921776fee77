"""Kept copies' names, marks and messages: pure functions, no services."""

from __future__ import annotations

import pytest

from pgclone import configs
from pgclone.pg import kept_copies
from pgclone.pg.kept_copies import Found, KeptMark, clone_note, kept_name, read_mark


def test_a_kept_name_fits_postgresql_and_depends_on_key_and_location():
    key = "x" * 300 + "/20260101T000000.000000Z.default.dump"
    name = kept_name("s3://bucket/prefix", key)
    assert name.startswith("pgclone_kept_") and len(name.encode()) <= 63
    assert name == kept_name("s3://bucket/prefix", key)
    assert name != kept_name("s3://other/prefix", key)
    assert name != kept_name("s3://bucket/prefix", key.replace("default", "other"))


@pytest.mark.parametrize(
    ("version", "method", "note"),
    [
        (180000, "clone", " (cloned: file_copy_method = clone)"),
        (180003, "CLONE", " (cloned: file_copy_method = clone)"),
        (180000, "copy", ""),
        (170005, "clone", ""),  # no such setting before 18: never a clone
        (150010, None, ""),
        (180000, None, ""),
    ],
)
def test_only_postgresql_18_with_file_copy_method_clone_says_it_cloned(version, method, note):
    assert clone_note(version, method) == note


def test_a_kept_mark_reads_back_and_nothing_else_passes_for_one():
    mark = KeptMark(key="db/1.default.dump", location="/d", job="j", made="t", template="geo")
    assert read_mark(mark.text()) == mark
    for comment in (None, "", "pgclone:job:live", "pgclone kept: {", "pgclone kept: []",
                    'pgclone kept: {"key": "k"}'):  # fmt: skip
        assert read_mark(comment) is None


def found(**changes) -> Found:
    mark = KeptMark(key="k", location="/d", job="j", made="t").text()
    values = dict(name="pgclone_kept_x", owner="app", ours=True, template=False,
                  allows_connections=False, comment=mark, size=1)  # fmt: skip
    return Found(**{**values, **changes})


def test_only_an_own_marked_non_template_database_is_a_kept_copy():
    assert kept_copies.refusal(found(), "k", "/d") is None
    assert "owned by tenant" in kept_copies.refusal(found(ours=False, owner="tenant"))
    assert "template" in kept_copies.refusal(found(template=True))
    assert "kept mark" in kept_copies.refusal(found(comment="pgclone:j:live"))
    assert "another dump" in kept_copies.refusal(found(), "other", "/d")
    assert "another dump" in kept_copies.refusal(found(), "k", "/elsewhere")


def test_keep_copy_is_a_restore_config_key(settings):
    settings.PGCLONE_RESTORE_CONFIGS = {"ci": {"keep_copy": True}}
    assert configs.restore_config("ci").keep_copy is True
    assert configs.restore_config("default").keep_copy is False


def test_the_limits_are_checked(settings):
    from pgclone.checks import check_kept_copies

    assert check_kept_copies() == []  # 5 copies, no bound on bytes
    settings.PGCLONE_KEPT_COPIES = -1
    settings.PGCLONE_KEPT_COPIES_BYTES = "10GB"
    found = {message.id: message.msg for message in check_kept_copies()}
    assert "PGCLONE_KEPT_COPIES must be a whole number of at least 0" in found["pgclone.E050"]
    assert "PGCLONE_KEPT_COPIES_BYTES must be a whole number of at least 1" in found["pgclone.E051"]
    settings.PGCLONE_KEPT_COPIES, settings.PGCLONE_KEPT_COPIES_BYTES = 0, 10 * 2**30
    assert check_kept_copies() == []
