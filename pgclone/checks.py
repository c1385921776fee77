"""Django system checks: problems found at start-up rather than mid-job."""

from __future__ import annotations

import shutil
from typing import Any

from django.conf import settings
from django.core import checks

from pgclone import conf, postgres
from pgclone.exceptions import PgCloneError


@checks.register("pgclone")
def check_client_tools(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Warning(
            f"{program} is not on PATH.",
            hint="Install the PostgreSQL client tools on every machine that runs pgclone jobs.",
            id="pgclone.W001",
        )
        for program in ("pg_dump", "pg_restore")
        if shutil.which(program) is None
    ]


@checks.register("pgclone")
def check_default_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    engine = settings.DATABASES.get("default", {}).get("ENGINE")
    if engine not in postgres.POSTGRES_ENGINES:
        return [
            checks.Error(
                f"The default database uses {engine!r}.",
                hint="pgclone dumps and restores PostgreSQL databases only.",
                id="pgclone.E001",
            )
        ]
    return []


@checks.register("pgclone")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from pgclone.storage import get_storage

    errors = []
    try:
        get_storage()
    except PgCloneError as exc:
        errors.append(checks.Error(str(exc), id="pgclone.E002"))
    for setting, configs in (
        ("PGCLONE_DUMP_CONFIGS", conf.dump_configs()),
        ("PGCLONE_RESTORE_CONFIGS", conf.restore_configs()),
    ):
        if not isinstance(configs, dict):
            errors.append(
                checks.Error(f"{setting} must be a dict of named configs.", id="pgclone.E003")
            )
    return errors


@checks.register("pgclone")
def check_pgconnection(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    import pgconnection

    try:
        pgconnection.check()
    except RuntimeError:
        return [
            checks.Warning(
                "DATABASES is not wrapped with pgconnection.configure().",
                hint="Restores run their pre-swap hooks (migrate by default) on the restored "
                "copy through django-pgconnection: write "
                "DATABASES = pgconnection.configure({...}) in your settings.",
                id="pgclone.W002",
            )
        ]
    return []


@checks.register("pgclone")
def check_celery(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The Celery settings long jobs need (see the README's "Running a worker").

    They are read from Celery's current app: the project must load its Celery
    app when Django starts (in the project package's ``__init__``)."""
    from celery import current_app

    config = current_app.conf
    found = []
    if (config.worker_prefetch_multiplier or 0) > 1:
        found.append(
            checks.Warning(
                f"CELERY_WORKER_PREFETCH_MULTIPLIER is {config.worker_prefetch_multiplier}.",
                hint="Set it to 1: a worker busy with a long dump should not hold other "
                "jobs' steps it has prefetched.",
                id="pgclone.W010",
            )
        )
    time_limit = config.task_time_limit
    if not time_limit:
        found.append(
            checks.Warning(
                "No CELERY_TASK_TIME_LIMIT is set.",
                hint="A hung pg_dump or pg_restore would hold its worker forever: set a limit "
                "above your longest step (for instance 6 hours for a large database).",
                id="pgclone.W011",
            )
        )
    broker = str(config.broker_url or "")
    if broker.startswith(("redis://", "rediss://")):
        visibility = (config.broker_transport_options or {}).get("visibility_timeout", 3600)
        if time_limit and visibility < time_limit:
            found.append(
                checks.Warning(
                    f"The Redis visibility timeout ({visibility}s) is shorter than "
                    f"CELERY_TASK_TIME_LIMIT ({time_limit}s).",
                    hint="Redis hands a step still running to another worker after the "
                    "visibility timeout. pgclone notices and skips the copy, but set "
                    "CELERY_BROKER_TRANSPORT_OPTIONS = {'visibility_timeout': …} above the "
                    "time limit.",
                    id="pgclone.W012",
                )
            )
    return found
