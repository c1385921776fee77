"""Are the backups alive? (``manage.py pgclone health``, the admin, health checks.)

A database is healthy when its newest complete dump is younger than the
limit, no dump newer than that one (keys timestamped in the future
included) is damaged or refused, since ``restore DB_NAME`` would fail on it or
something other than pgclone wrote it to the storage, and the last
trial restore of its dumps, if there was one, passed. A trial's record that
can't be trusted (unreadable, its signature wrong while signing is on, or of
another dump: another key, other bytes than the dump's SHA-256) counts as a
failed trial: it proves nothing. Records made before trials named the SHA-256
they proved are "unbound": shown as such, neither a proof of these bytes nor a
failure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from pgclone.exceptions import InvalidInput
from pgclone.humanize import human_age, parse_duration
from pgclone.storage import keys, signing
from pgclone.storage.base import DumpInfo, Storage

DEFAULT_MAX_AGE = "26h"  # a nightly dump, with two hours' grace
MAX_REASON = 300  # characters of a failed trial's error on its one line
UNBOUND = "its record, older than this pgclone, does not name the bytes it restored"


@dataclass(frozen=True)
class Trial:
    """What a dump's last trial restore proved."""

    key: str
    passed: bool
    at: dt.datetime | None
    job_id: str = ""
    problem: str = ""  # why it proves nothing: its error, or what is wrong with the record
    bound: bool = True  # the record names the SHA-256 of the bytes it restored

    def text(self, now: dt.datetime) -> str:
        when = (
            f"{human_age((now - self.at).total_seconds())} ago" if self.at else "at an unknown time"
        )
        job = f" (job {self.job_id[:8]})" if self.job_id else ""
        if self.passed and not self.bound:
            return f"restored in a trial {when}{job}, unbound: {UNBOUND}"
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
    at, job = _moment(record.get("at")), str(record.get("job_id", ""))
    distrust = signing.record_problem(record) or _of_another_dump(info, record)
    if distrust:
        return Trial(key, False, at, job, f"its record: {distrust}")
    passed = record.get("outcome") == "passed"
    problem = "" if passed else str(record.get("error") or "the record says it failed")
    return Trial(key, passed, at, job, problem, bound="sha256" in record)


def _of_another_dump(info: DumpInfo, record: dict[str, Any]) -> str:
    """Why the record is not of this dump as it is now ("" when it is): a trial
    proves only the exact bytes it restored."""
    if record.get("key") != str(info.key):
        return f"it is of another dump ({str(record.get('key'))[:200]!r})"
    if info.damaged and record.get("outcome") == "passed":
        return "the dump it vouches for can't be used (`manage.py pgclone verify` says why)"
    proved = record.get("sha256")
    if proved is not None and proved != info.manifest.get("sha256"):
        return (
            f"it is of other bytes (SHA-256 {str(proved)[:16]}…) than the dump's "
            f"(SHA-256 {str(info.manifest.get('sha256'))[:16]}…)"
        )
    return ""


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
            problem += f" ({len(infos)} damaged or refused: `manage.py pgclone ls --long`)"
        return DatabaseHealth(name, None, None, None, (problem,))
    newest = max(complete, key=lambda info: info.key.created)
    age = (now - newest.key.created).total_seconds()
    problems = []
    if age > limit[0]:
        problems.append(f"its newest dump is older than {limit[1]}")
    newer = [info.key for info in infos if info.damaged and info.key.created > newest.key.created]
    if newer:
        problems.append(
            f"a newer dump, {max(newer)}, is damaged or refused (`manage.py pgclone verify "
            f"{max(newer)}` says why)"
        )
    trials = [trial for info in infos if (trial := trial_of(info)) is not None]
    last = max(trials, key=lambda t: t.at or dt.datetime.min.replace(tzinfo=dt.UTC), default=None)
    if last is not None and not last.passed:
        problems.append("the last trial restore failed")
    return DatabaseHealth(name, newest, age, last, tuple(problems))
