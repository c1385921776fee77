from __future__ import annotations

from django.apps import AppConfig


class PgCloneConfig(AppConfig):
    name = "pgclone"
    verbose_name = "pgclone"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from pgclone import checks  # noqa: F401 - registers the system checks
        from pgclone.engine.threads import share_database_settings

        share_database_settings()
