"""The Celery app of the test project, as a Django project would define it."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("pgclone_tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
