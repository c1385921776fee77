"""Retention: which dumps to delete, per database and config.

A dump config may say ``keep_last`` (keep the newest N dumps) and/or
``keep_days`` (keep dumps younger than that); a dump either rule keeps is
kept. Whatever the rules say, the newest dump of each database and config is
never deleted, nor a dump that a pending or running restore uses. A dump's
kept copies (``pgclone.pg.kept_copies``) are dropped with it. Only
complete pgclone dumps that can be used are considered: nothing else in the
storage is ever touched. A dump whose manifest is damaged or refused where it
is stored (``signing.examine``: a wrong or missing signature, another key's
manifest, a key timestamped in the future) is neither counted nor deleted:
otherwise whoever can write to the storage could push genuine dumps out with
forged ones. It is left alone, and said so.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from pgclone import configs
from pgclone.models import Job
from pgclone.pg import kept_copies
from pgclone.storage import Storage, keys
from pgclone.storage.base import DumpInfo

logger = logging.getLogger("pgclone")


@dataclass(frozen=True)
class Pruning:
    """What retention deletes (or would), and what it leaves alone because it
    can't be used: neither counted nor deleted."""

    deleted: list[keys.DumpKey] = field(default_factory=list)
    left_alone: list[DumpInfo] = field(default_factory=list)

    def left_alone_lines(self) -> list[str]:
        return [
            f"Left alone {info.key}, neither counted nor deleted: {info.damaged}"
            for info in self.left_alone
        ]


def rules(config_name: str) -> tuple[int | None, float | None]:
    """The retention rules of a dump config: (keep_last, keep_days), None when unset."""
    config = configs.retention_of(config_name)
    return config.keep_last, config.keep_days


def in_use() -> set[str]:
    """Dump keys that a pending or running restore (or trial restore) reads."""
    active = Job.objects.active().filter(kind__in=(Job.Kind.RESTORE, Job.Kind.VERIFY))
    return set(active.exclude(dump_key="").values_list("dump_key", flat=True))


def review(
    storage: Storage, *, database: str | None = None, config: str | None = None, now: Any = None
) -> Pruning:
    """The dumps that retention would delete now, oldest first, and the ones it
    leaves alone."""
    now = now or timezone.now()
    protected = in_use()
    infos = [i for i in storage.infos(database, now) if config is None or i.key.config == config]
    found = [info.key for info in infos if not info.damaged]
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
    return Pruning(sorted(doomed), [info for info in infos if info.damaged])


def expired(
    storage: Storage, *, database: str | None = None, config: str | None = None, now: Any = None
) -> list[keys.DumpKey]:
    """The dumps that retention would delete now, oldest first."""
    return review(storage, database=database, config=config, now=now).deleted


def prune(storage: Storage, *, database: str | None = None, config: str | None = None) -> Pruning:
    """Delete what retention says should go; return what was deleted and what was
    left alone (each logged as a warning)."""
    pruning = review(storage, database=database, config=config)
    for key in pruning.deleted:
        storage.delete(key)
    # A kept copy goes with its dump.
    kept_copies.drop_copies_of(storage.location, [str(key) for key in pruning.deleted])
    for line in pruning.left_alone_lines():
        logger.warning("pgclone retention: %s", line)
    return pruning
