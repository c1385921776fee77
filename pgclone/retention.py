"""Retention: which dumps to delete, per database and config.

A dump config may say ``keep_last`` (keep the newest N dumps) and/or
``keep_days`` (keep dumps younger than that); a dump either rule keeps is
kept. Whatever the rules say, the newest dump of each database and config is
never deleted, nor a dump that a pending or running restore uses. Only
complete pgclone dumps are considered: nothing else in the storage is ever
touched.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from django.utils import timezone

from pgclone import configs, keys
from pgclone.models import Job
from pgclone.storage import Storage


def rules(config_name: str) -> tuple[int | None, float | None]:
    """The retention rules of a dump config: (keep_last, keep_days), None when unset."""
    config = configs.retention_of(config_name)
    return config.keep_last, config.keep_days


def in_use() -> set[str]:
    """Dump keys that a pending or running restore (or trial restore) reads."""
    active = Job.objects.active().filter(kind__in=(Job.Kind.RESTORE, Job.Kind.VERIFY))
    return set(active.exclude(dump_key="").values_list("dump_key", flat=True))


def expired(
    storage: Storage, *, database: str | None = None, config: str | None = None, now: Any = None
) -> list[keys.DumpKey]:
    """The dumps that retention would delete now, oldest first."""
    now = now or timezone.now()
    protected = in_use()
    found = [k for k in storage.list_keys(database) if config is None or k.config == config]
    doomed = []
    group_of = lambda key: (key.database, key.config)  # noqa: E731
    for (_, config_name), group in itertools.groupby(sorted(found, key=group_of), key=group_of):
        keep_last, keep_days = rules(config_name)
        if keep_last is None and keep_days is None:
            continue
        newest_first = sorted(group, reverse=True)
        for position, key in enumerate(newest_first):
            young = keep_days is not None and now - key.created < dt.timedelta(days=keep_days)
            recent = keep_last is not None and position < keep_last
            if position == 0 or young or recent or str(key) in protected:
                continue
            doomed.append(key)
    return sorted(doomed)


def prune(
    storage: Storage, *, database: str | None = None, config: str | None = None
) -> list[keys.DumpKey]:
    """Delete what retention says should go; return what was deleted."""
    doomed = expired(storage, database=database, config=config)
    for key in doomed:
        storage.delete(key)
    return doomed
