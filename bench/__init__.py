"""Benchmarks of pgclone against pg_dump/pg_restore and django-pgclone (``python -m bench``).

The package is also the bench's Django project: as in any Django project, its
Celery app is loaded with it, so that ``manage.py pgclone`` sends to its broker.
"""

from __future__ import annotations

from bench.celery_app import app as celery_app

__all__ = ["celery_app"]
