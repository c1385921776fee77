"""pgclone.W015: restoring as a superuser is allowed only loudly."""

from __future__ import annotations

from django.test import override_settings

from pgclone.checks import check_settings


def ids() -> set[str]:
    return {message.id for message in check_settings()}


def test_allowing_superuser_restores_is_a_warning_on_every_command():
    with override_settings(PGCLONE_ALLOW_SUPERUSER_RESTORE=True):
        (warning,) = [m for m in check_settings() if m.id == "pgclone.W015"]
    assert "run programs on the database server" in warning.msg
    assert "owns the database" in warning.hint


def test_off_by_default():
    with override_settings(PGCLONE_ALLOW_SUPERUSER_RESTORE=False):
        assert "pgclone.W015" not in ids()
