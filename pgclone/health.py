"""Are the backups alive? (``manage.py pgclone health``, the admin, health checks.)

A database is healthy when its newest complete dump is younger than the
limit and the last trial restore of its dumps, if there was one, passed. A
trial's record that can't be trusted (unreadable, or its signature wrong
while signing is on) counts as a failed trial: it proves nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from pgclone import keys, signing
from pgclone.exceptions import InvalidInput
from pgclone.humanize import human_age, parse_duration
from pgclone.storage.base import DumpInfo, Storage

DEFAULT_MAX_AGE = "26h"  # a nightly dump, with two hours' grace
MAX_REASON = 300  # characters of a failed trial's error on its one line


@dataclass(frozen=True)
class Trial:
    """What a dump's last trial restore proved."""

    key: str
    passed: bool
    at: dt.datetime | None
    job_id: str = ""
    problem: str = ""  # why it proves nothing: its error, or what is wrong with the record

    def text(self, now: dt.datetime) -> str:
        when = (
            f"{human_age((now - self.at).total_seconds())} ago" if self.at else "at an unknown time"
        )
        job = f" (job {self.job_id[:8]})" if self.job_id else ""
        if self.passed:
            return f"restored in a trial {when}{job}"
        why = " ".join(line.strip() for line in self.problem.splitlines() if line.strip())
        if len(why) > MAX_REASON:
            why = why[: MAX_REASON - 1] + "…"
        return f"trial restore FAILED {when}{job}: {why or 'failed'}"


def trial_of(info: DumpInfo) -> Trial | None:
    """The dump's last trial restore, None if it never had one."""
    record = info.trial
    if record is None:
        return None
    key = str(info.key)
    if "problem" in record and "outcome" not in record:
        return Trial(key, False, None, problem=f"its record can't be read: {record['problem']}")
    at = _moment(record.get("at"))
    distrust = signing.record_problem(record)
    if distrust:
        return Trial(key, False, at, str(record.get("job_id", "")), f"its record: {distrust}")
    passed = record.get("outcome") == "passed" and record.get("key") == key
    problem = "" if passed else str(record.get("error") or "the record says it failed")
    return Trial(key, passed, at, str(record.get("job_id", "")), problem)


def _moment(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class DatabaseHealth:
    name: str
    newest: DumpInfo | None
    age: float | None  # seconds since the newest dump was made
    trial: Trial | None  # the last trial restore of any of its dumps
    problems: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def line(self, now: dt.datetime) -> str:
        status = "ok  " if self.healthy else "FAIL"
        if self.newest is None:
            return f"{status} {self.name}: " + "; ".join(self.problems)
        parts = [f"newest dump {human_age(self.age or 0)} old ({self.newest.key})"]
        if self.trial is None:
            parts.append("never restored in a trial")
        else:
            parts.append(self.trial.text(now) + _of_another(self.trial, self.newest))
        parts += [p for p in self.problems if not p.startswith("the last trial")]
        return f"{status} {self.name}: " + "; ".join(parts)


def _of_another(trial: Trial, newest: DumpInfo) -> str:
    return "" if trial.key == str(newest.key) else f" ({trial.key})"


def check(
    storage: Storage,
    names: list[str] | None = None,
    *,
    max_age: str | None = None,
    now: dt.datetime | None = None,
) -> list[DatabaseHealth]:
    """The health of each named database (every one with dumps when None);
    ``max_age`` as in ``26h`` (the default), ``45m``, ``2d``."""
    limit = max_age or DEFAULT_MAX_AGE
    try:
        parse_duration(limit)
    except ValueError as exc:
        raise InvalidInput(f"--max-age: {exc}") from None
    for name in names or ():
        keys.validate_database_name(name)
    return assess(storage.infos(), names, max_age=limit, now=now)


def assess(
    infos: list[DumpInfo],
    names: list[str] | None = None,
    *,
    max_age: str = DEFAULT_MAX_AGE,
    now: dt.datetime | None = None,
) -> list[DatabaseHealth]:
    """``check`` on dumps already listed (the admin's dumps page lists them anyway)."""
    seconds, limit = parse_duration(max_age), max_age
    now = now or timezone.now()
    by_name: dict[str, list[DumpInfo]] = {}
    for info in infos:
        by_name.setdefault(info.key.database, []).append(info)
    names = names or sorted(by_name)
    return [_health(name, by_name.get(name, []), (seconds, limit), now) for name in names]


def _health(
    name: str, infos: list[DumpInfo], limit: tuple[float, str], now: dt.datetime
) -> DatabaseHealth:
    complete = [info for info in infos if not info.damaged]
    if not complete:
        problem = "no complete dump in storage"
        if infos:
            problem += f" ({len(infos)} with a damaged manifest)"
        return DatabaseHealth(name, None, None, None, (problem,))
    newest = max(complete, key=lambda info: info.key.created)
    age = (now - newest.key.created).total_seconds()
    problems = []
    if age > limit[0]:
        problems.append(f"its newest dump is older than {limit[1]}")
    trials = [trial for info in infos if (trial := trial_of(info)) is not None]
    last = max(trials, key=lambda t: t.at or dt.datetime.min.replace(tzinfo=dt.UTC), default=None)
    if last is not None and not last.passed:
        problems.append("the last trial restore failed")
    return DatabaseHealth(name, newest, age, last, tuple(problems))
