"""The Celery app of the test project, as a Django project would define it."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("pgclone_tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_process_init.connect  # a prefork pool's children
@signals.worker_ready.connect  # solo and thread pools run tasks in the main process
def _install_faults(**kwargs):
    from tests import faults

    faults.install_from_environment()
