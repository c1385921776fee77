"""Whether pgclone's tasks sent from this process can reach a worker: the system
check pgclone.W013 says so at start-up, a job refuses to be sent without it, and
failure notifications are delivered here instead."""

from __future__ import annotations

from typing import Any


def celery_app_problem(app: Any = None) -> tuple[str, str] | None:
    """Why pgclone's tasks sent from here would never reach a worker, as (what is
    wrong, how to fix it); None when they can be sent. ``app`` is Celery's current
    app by default: the one pgclone's shared tasks are sent with."""
    if app is None:
        from celery import current_app

        app = current_app._get_current_object()
    if _is_fallback(app):
        return (
            "No Celery app is loaded: pgclone's jobs would go to Celery's fallback app, "
            "which reads no CELERY_* setting and sends to amqp://localhost, and never run.",
            "Load your project's Celery app when Django starts: import it in the project "
            "package's __init__.py (`from .celery import app as celery_app`, as Celery's "
            "Django guide shows)",
        )
    if not app.conf.broker_url:
        return (
            f"The Celery app {app.main or ''!r} has no broker configured: pgclone's jobs "
            "would go to Celery's default, amqp://localhost, and never run.",
            "Set CELERY_BROKER_URL (for instance 'redis://127.0.0.1:6379/0') and have the "
            "app read it (app.config_from_object('django.conf:settings', namespace='CELERY'))",
        )
    return None


def _is_fallback(app: Any) -> bool:
    """Celery's fallback app, which celery._state makes when a task is used while no app
    was created: ``Celery('default', fixups=[], set_as_current=False)``."""
    return app.main == "default" and not app.set_as_current and not app.fixups
