"""Benchmarks of pgclone against pg_dump/pg_restore and django-pgclone (``python -m bench``).

The package is also the bench's Django project: as in any Django project, its
Celery app is loaded with it, so that ``manage.py pgclone`` sends to its broker.
Only when it *is* the project, though (its settings are the ones in use):
creating a Celery app makes it the process's current app, and sets
``DJANGO_SETTINGS_MODULE``, which a process merely importing the harness
(``bench.harness``, say, from a test) must not have done to it.
"""

from __future__ import annotations

import os

if os.environ.get("DJANGO_SETTINGS_MODULE") == "bench.settings":
    from bench.celery_app import app as celery_app

    __all__ = ["celery_app"]
