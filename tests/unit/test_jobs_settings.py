"""PGCLONE_DUMP_JOBS and PGCLONE_RESTORE_JOBS: a bad value is a system check
error at startup, and a clear error if a job reaches it anyway."""

from __future__ import annotations

import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from pgclone import conf
from pgclone.checks import check_settings
from pgclone.exceptions import ConfigurationError

SETTINGS = [
    ("PGCLONE_DUMP_JOBS", "pgclone.E014", conf.dump_jobs),
    ("PGCLONE_RESTORE_JOBS", "pgclone.E015", conf.restore_jobs),
]
BAD = [
    ("4", "is '4' (a str), not a whole number of sessions"),
    (2.0, "is 2.0 (a float), not a whole number of sessions"),
    (True, "is True (a bool), not a whole number of sessions"),
    ([2], "is [2] (a list), not a whole number of sessions"),
    (0, "is 0: a job needs at least 1 session"),
    (-3, "is -3: a job needs at least 1 session"),
    (65, "is 65: more than 64 sessions, each a server connection held for the whole step"),
    (10**6, "is 1000000: more than 64 sessions"),
]


def jobs_errors() -> dict[str, object]:
    return {m.id: m for m in check_settings() if m.id in ("pgclone.E014", "pgclone.E015")}


@pytest.mark.parametrize(("name", "check_id", "read"), SETTINGS)
@pytest.mark.parametrize(("value", "problem"), BAD)
def test_a_bad_value_is_a_check_error_that_says_what_to_write(name, check_id, read, value, problem):
    with override_settings(**{name: value}):
        errors = jobs_errors()

    assert list(errors) == [check_id]
    assert errors[check_id].msg.startswith(f"{name} {problem}")
    assert errors[check_id].hint.startswith(f"Set {name} to a whole number from 1 to 64")


@pytest.mark.parametrize(("name", "check_id", "read"), SETTINGS)
@pytest.mark.parametrize(("value", "problem"), BAD)
def test_a_job_that_reads_a_bad_value_fails_with_the_same_words(
    name, check_id, read, value, problem
):
    with override_settings(**{name: value}), pytest.raises(ConfigurationError) as raised:
        read()

    assert isinstance(raised.value, ImproperlyConfigured)
    assert str(raised.value).startswith(f"{name} {problem}")
    assert "from 1 to 64" in str(raised.value)


@pytest.mark.parametrize(("name", "check_id", "read"), SETTINGS)
@pytest.mark.parametrize("value", [1, 2, 16, 64])
def test_a_whole_number_from_1_to_64_is_used_as_it_is(name, check_id, read, value):
    with override_settings(**{name: value}):
        assert jobs_errors() == {}
        assert read() == value


def test_the_defaults_two_dump_sessions_and_up_to_four_restore_sessions():
    with override_settings(PGCLONE_DUMP_JOBS=None, PGCLONE_RESTORE_JOBS=None):
        assert jobs_errors() == {}
        assert conf.dump_jobs() == 2
        assert conf.restore_jobs() == min(os.cpu_count() or 1, 4)
