"""The Celery app of a Django project that runs pgclone jobs.

Copy this file next to your project's ``manage.py`` (keep the name
``celery_app.py``: the worker and beat command lines in deploy/ use
``-A celery_app``), and load it whenever Django starts, so that the web
process and ``manage.py`` send pgclone's tasks through it rather than through
Celery's unconfigured default app. In your project package's ``__init__.py``::

    from celery_app import app as celery_app

    __all__ = ["celery_app"]

Every ``CELERY_*`` Django setting configures it (``CELERY_BROKER_URL``,
``CELERY_TASK_TIME_LIMIT``…; deploy/settings_example.py has the ones pgclone
wants), and pgclone's tasks are found through ``INSTALLED_APPS``.
"""

from __future__ import annotations

import os

from celery import Celery

# The systemd units, the Procfile and docker-compose.yml set it; this is the fallback.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")

app = Celery("myproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
