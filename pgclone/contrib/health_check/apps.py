"""For django-health-check 3.x, which finds checks registered by installed apps."""

from __future__ import annotations

from django.apps import AppConfig


class PgcloneHealthCheckConfig(AppConfig):
    name = "pgclone.contrib.health_check"
    label = "pgclone_health_check"

    def ready(self) -> None:
        try:
            from health_check.plugins import plugin_dir
        except ImportError:  # 4.x: checks are listed on the view instead
            return
        from pgclone.contrib.health_check import Backups

        plugin_dir.register(Backups)
