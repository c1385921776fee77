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
