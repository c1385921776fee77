"""Running hooks on another database: the ``default`` connection, re-pointed.

A hook is a management command run in the worker (``migrate`` before a
swap, a clean-up before a dump); it must act on the temporary copy (or the
database being dumped), never on the live one. Two ways, one guarantee:

- Where the project wraps ``DATABASES`` with django-pgconnection (psycopg2
  projects, the long-documented way), its ``route()`` does it.
- Anywhere else (psycopg 3, where django-pgconnection can't work, or an
  unwrapped psycopg2 project), this thread's connections for ``default`` and
  for every alias that reaches the same database are replaced, for the
  duration of the hooks, by connections to the other database. Django's
  connections are per thread, so the worker's other threads (the heartbeat)
  keep theirs; neither driver's own modules are imported here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.utils import load_backend

SAME_DATABASE = ("HOST", "PORT", "NAME")


def uses_pgconnection() -> bool:
    """Whether ``DATABASES`` is wrapped with ``pgconnection.configure()`` (told by
    the mapping type it installs, without importing it)."""
    return type(settings.DATABASES).__module__.startswith("pgconnection")


def routing_in_use() -> str:
    return "django-pgconnection" if uses_pgconnection() else "pgclone's per-thread routing"


def routed(target: dict[str, Any]) -> contextlib.AbstractContextManager:
    """Send this thread's queries on ``default`` to the database ``target``
    describes (a DATABASES entry) for the duration of the block."""
    if uses_pgconnection():
        import pgconnection

        return pgconnection.route(target)
    return _routed(target)


@contextlib.contextmanager
def _routed(target: dict[str, Any]) -> Iterator[None]:
    source = connections.settings["default"]
    aliases = [
        alias
        for alias in connections.settings
        if alias == "default"
        or [connections.settings[alias].get(k) for k in SAME_DATABASE]
        == [source.get(k) for k in SAME_DATABASE]
    ]
    saved = {alias: connections[alias] for alias in aliases}
    replacements = {}
    for alias in aliases:
        config = {**connections.settings[alias], **{k: target.get(k) for k in SAME_DATABASE}}
        replacements[alias] = load_backend(config["ENGINE"]).DatabaseWrapper(config, alias)
        connections[alias] = replacements[alias]
    try:
        yield
    finally:
        for alias, wrapper in replacements.items():
            wrapper.close()
            connections[alias] = saved[alias]
