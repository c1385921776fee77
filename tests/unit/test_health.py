"""Health verdicts, trial records and table comparisons, on records made here."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from pgclone import health
from pgclone.exceptions import InvalidInput
from pgclone.humanize import parse_duration
from pgclone.pg.table_counts import TableCount, compare
from pgclone.storage import keys, signing
from pgclone.storage.base import DumpInfo
from pgclone.testing import InMemoryStorage
from tests.storage_contract import manifest_for

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def info(database: str, hours_ago: float, trial: dict | None = None) -> DumpInfo:
    key = keys.make_key(database, "default", NOW - dt.timedelta(hours=hours_ago))
    return DumpInfo(key, manifest_for(key, b"data"), trial=trial)


def passed(key: DumpInfo, hours_ago: float = 1) -> dict:
    at = (NOW - dt.timedelta(hours=hours_ago)).isoformat()
    return {"key": str(key.key), "outcome": "passed", "at": at, "job_id": "1234abcd-ef"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("45m", 2700), ("26h", 93600), ("2d", 172800), ("1.5h", 5400), (" 3D ", 259200)],
)
def test_durations_as_people_write_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "26", "h", "-1h", "0m", "2w", "soonh", "infh", "nand"])
def test_anything_else_is_not_a_duration(text):
    with pytest.raises(ValueError, match="positive number and a unit"):
        parse_duration(text)


def test_a_recent_dump_with_no_trial_is_healthy():
    (found,) = health.assess([info("app", 25)], now=NOW)
    assert found.healthy
    assert found.line(NOW).startswith("ok   app: newest dump 1d old (app/")
    assert "never restored in a trial" in found.line(NOW)


def test_too_old_is_unhealthy_and_says_the_limit_as_written():
    old, older = info("app", 27), info("app", 50)
    (found,) = health.assess([older, old], now=NOW)
    assert not found.healthy and found.newest == old
    assert "its newest dump is older than 26h" in found.line(NOW)
    assert health.assess([old], max_age="2d", now=NOW)[0].healthy


def test_the_last_trial_counts_whichever_dump_it_tried():
    first = info("app", 30)
    failed = {**passed(first, 29), "outcome": "failed", "error": "pg_restore: error\nsecond line"}
    first = DumpInfo(first.key, first.manifest, trial=failed)
    newest = info("app", 2)
    newest = DumpInfo(newest.key, newest.manifest, trial=passed(newest, 1))
    (found,) = health.assess([first, newest], now=NOW)
    assert found.healthy and "restored in a trial 1h ago (job 1234abcd)" in found.line(NOW)
    # The other way round: the failure is the latest word.
    newest = DumpInfo(newest.key, newest.manifest, trial=passed(newest, 40))
    (found,) = health.assess([first, newest], now=NOW)
    assert not found.healthy
    line = found.line(NOW)
    assert "trial restore FAILED 1d ago (job 1234abcd): pg_restore: error second line" in line
    assert f"({first.key})" in line  # of another dump than the newest


def test_a_trial_record_that_cannot_be_trusted_proves_nothing(settings):
    dump = info("app", 1)
    settings.PGCLONE_SIGNING_KEY = "k" * 32
    unsigned = DumpInfo(dump.key, dump.manifest, trial=passed(dump))
    assert health.trial_of(unsigned).problem == "its record: it is not signed"
    signed = DumpInfo(dump.key, dump.manifest, trial=signing.sign(passed(dump)))
    assert health.trial_of(signed).passed
    forged = DumpInfo(dump.key, dump.manifest, trial={**signing.sign(passed(dump)), "at": "x"})
    assert not health.trial_of(forged).passed
    assert not health.assess([forged], now=NOW)[0].healthy
    unreadable = DumpInfo(dump.key, dump.manifest, trial={"problem": "the record is not JSON"})
    assert "can't be read" in health.trial_of(unreadable).problem
    moved = DumpInfo(dump.key, dump.manifest, trial={**passed(dump), "key": "app/other.dump"})
    assert not health.trial_of(moved).passed  # a record copied from another dump


def test_a_database_without_a_complete_dump_is_unhealthy():
    damaged = DumpInfo(info("app", 1).key, {}, damaged="bad manifest")
    found = health.assess([damaged], ["app", "nobody"], now=NOW)
    assert [f.line(NOW) for f in found] == [
        "FAIL app: no complete dump in storage (1 damaged or refused: "
        "`manage.py pgclone ls --long`)",
        "FAIL nobody: no complete dump in storage",
    ]


def test_a_newer_dump_that_cannot_be_used_is_unhealthy():
    genuine, planted = info("app", 2), info("app", 1)
    refused = DumpInfo(planted.key, {}, damaged="Dump … is refused: its signed manifest says …")
    (found,) = health.assess([genuine, refused], now=NOW)
    assert not found.healthy and found.newest == genuine
    assert found.line(NOW).startswith(f"FAIL app: newest dump 2h old ({genuine.key})")
    assert f"a newer dump, {planted.key}, is damaged or refused" in found.line(NOW)
    older = DumpInfo(info("app", 3).key, {}, damaged="bad manifest")  # only an older one
    assert health.assess([older, genuine], now=NOW)[0].healthy


def test_a_trial_proves_only_the_bytes_it_restored():
    dump = info("app", 1)
    bound = {**passed(dump), "sha256": dump.manifest["sha256"]}
    assert health.trial_of(DumpInfo(dump.key, dump.manifest, trial=bound)).passed
    other = DumpInfo(dump.key, dump.manifest, trial={**bound, "sha256": "f" * 64})
    trial = health.trial_of(other)
    assert not trial.passed and trial.problem.startswith("its record: it is of other bytes")
    assert not health.assess([other], now=NOW)[0].healthy
    refused = DumpInfo(dump.key, {}, damaged="refused", trial=bound)
    assert "can't be used" in health.trial_of(refused).problem


def test_a_record_made_before_trials_named_their_bytes_is_unbound():
    dump = info("app", 1)
    old = DumpInfo(dump.key, dump.manifest, trial=passed(dump))
    trial = health.trial_of(old)
    assert trial.passed and not trial.bound
    (found,) = health.assess([old], now=NOW)
    assert found.healthy  # shown, not failed
    assert "restored in a trial 1h ago (job 1234abcd), unbound: its record" in found.line(NOW)


def test_check_refuses_a_bad_limit_or_name():
    with pytest.raises(InvalidInput, match="--max-age: 'soon' is not a duration"):
        health.check(InMemoryStorage(), max_age="soon")
    with pytest.raises(InvalidInput, match="can't be used in a dump key"):
        health.check(InMemoryStorage(), ["a/b"])


def table(name: str, rows: int | None, exact: bool = True) -> TableCount:
    return TableCount("public", name, rows, exact)


def test_comparison_passes_what_the_dump_recorded():
    recorded = [table("a", 3), table("b", 1000, exact=False), table("c", None, exact=False)]
    arrived = [table("a", 3), table("b", 1150), table("c", 7)]
    result = compare(recorded, arrived)
    assert result.passed and (result.exact, result.estimated, result.rows) == (1, 1, 1160)
    assert result.summary() == (
        "3 tables, 1,160 rows: as the dump recorded "
        "(1 counted exactly, 1 within 20% of an estimate)"
    )


def test_comparison_names_every_difference():
    recorded = [table("a", 3), table("b", 1000, exact=False), table("gone", 1)]
    arrived = [table("a", 2), table("b", 700), table("extra", 0)]
    result = compare(recorded, arrived)
    assert not result.passed
    assert result.problems == (
        "table public.a has 2 rows, the dump recorded 3",
        "table public.b has 700 rows, the dump recorded about 1000 (±20%)",
        "table public.gone is missing",
        "table public.extra arrived but is not in what the dump recorded",
    )


def test_the_health_check_backend_reports_the_same(settings, tmp_path):
    from pgclone.contrib.health_check import Backups, problems

    settings.PGCLONE_STORAGE_LOCATION = str(tmp_path)
    assert problems() == "No dumps in storage: nothing is backed up."
    from tests.storage_contract import LocalBackend, store

    long_ago = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    store(LocalBackend(tmp_path), keys.make_key("app", "default", long_ago), b"data")
    assert problems(max_age="26h").startswith("FAIL app: newest dump")
    assert problems(max_age="100000d") == ""

    check = Backups() if hasattr(Backups, "run") else None
    if check is not None:  # django-health-check 4.x
        result = asyncio.run(check.get_result())
        assert "FAIL app" in str(result.error)
        result = asyncio.run(Backups(max_age="100000d").get_result())
        assert result.error is None
    else:  # 3.x
        settings.PGCLONE_HEALTH_MAX_AGE = "26h"
        backend = Backups()
        backend.run_check()
        assert "FAIL app" in str(backend.errors[0])
        settings.PGCLONE_HEALTH_MAX_AGE = "100000d"
        backend.run_check()
        assert backend.errors == []
