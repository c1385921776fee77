"""Threads that query the database with the same settings as their creator.

django-pgconnection keeps ``DATABASES`` per thread: a new thread would see
the settings as first written, without Django's defaults (TIME_ZONE…) and
without any change made since (a test database's name, a route). Threads
started here get their creator's settings, and close their connections
when they end.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from django.db import connections


def share_database_settings() -> None:
    """Make this thread's database settings the ones every new thread starts from.

    django-pgconnection gives each new thread a copy of ``DATABASES`` as first
    written, before Django fills in its defaults (ATOMIC_REQUESTS, TIME_ZONE…),
    so a query from any other thread (a threaded web server's request, the
    test live server) would fail. pgclone calls this once Django is set up.
    """
    databases = connections.settings
    if hasattr(databases, "_initial_databases"):
        databases._initial_databases = copy.deepcopy(
            {alias: databases[alias] for alias in databases}
        )


def start(target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
    databases = {alias: connections.settings[alias] for alias in connections.settings}

    def run() -> None:
        for alias, config in databases.items():
            connections.settings[alias] = config
        try:
            target(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
