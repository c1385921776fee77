# Load the Celery app whenever Django starts, so shared tasks use it.
from demo_project.celery import app as celery_app

__all__ = ["celery_app"]
