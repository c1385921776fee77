"""pgclone's backups as a django-health-check check (the ``health`` extra).

The verdict is ``manage.py pgclone health``'s: every dumped database (or the
ones named) has a complete dump younger than ``max_age`` whose last trial
restore, if any, passed. It reads only the storage, never a database.

django-health-check 4.x lists checks on its view::

    HealthCheckView.as_view(checks=[
        "health_check.checks.Database",
        ("pgclone.contrib.health_check.Backups", {"max_age": "26h"}),
    ])

django-health-check 3.x finds its backends in installed apps: add
``"pgclone.contrib.health_check"`` to INSTALLED_APPS, after ``"health_check"``
(its settings: ``PGCLONE_HEALTH_MAX_AGE``, ``PGCLONE_HEALTH_DATABASES``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from health_check.exceptions import ServiceUnavailable

from pgclone import api
from pgclone.exceptions import PgCloneError


def problems(max_age: str | None = None, databases: list[str] | None = None) -> str:
    """What is wrong with the backups, one database a line; "" when all is well."""
    try:
        found = api.health(databases or None, max_age=max_age)
    except PgCloneError as exc:
        return str(exc)
    if not found:
        return "No dumps in storage: nothing is backed up."
    from django.utils import timezone

    now = timezone.now()
    return "\n".join(database.line(now) for database in found if not database.healthy)


try:
    from health_check.base import HealthCheck  # 4.x
except ImportError:
    HealthCheck = None

if HealthCheck is not None:

    @dataclasses.dataclass
    class Backups(HealthCheck):
        """Recent dumps, proven to restore when they were tried."""

        max_age: str | None = None
        databases: list[str] | None = None

        def run(self) -> None:
            found = problems(self.max_age, self.databases)
            if found:
                raise ServiceUnavailable(found)

else:  # 3.x: registered by apps.py, configured by settings
    try:
        from health_check.backends import HealthCheck as _Backend  # 3.20 and newer
    except ImportError:
        from health_check.backends import BaseHealthCheckBackend as _Backend

    class Backups(_Backend):  # type: ignore[no-redef]
        """Recent dumps, proven to restore when they were tried."""

        critical_service = True

        def check_status(self, subsets: Any = None) -> None:
            from pgclone import conf

            found = problems(conf.health_max_age(), conf.health_databases())
            if found:
                self.add_error(ServiceUnavailable(found))

        def __repr__(self) -> str:
            return "pgclone backups"
