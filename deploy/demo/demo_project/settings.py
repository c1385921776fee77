"""A small Django project using pgclone, as a user would set it up."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "demo_project.urls"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pgclone",
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"

# Plain settings: pgclone runs restore hooks on the copy itself, whichever driver.
# The demo connects as its own role, which owns the database and may create
# databases but is not a superuser: pgclone refuses to restore as a superuser
# (see "Security" in the README). deploy/demo/run.sh creates it.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DEMO_DATABASE", "pgclone_demo"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("DEMO_ROLE", "pgclone_demo"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_IGNORE_RESULT = True
# What long pgclone jobs need (pgclone's system checks say so when missing).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 6 * 3600
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7 * 3600}

PGCLONE_STORAGE_LOCATION = os.environ.get("PGCLONE_STORAGE_LOCATION", ".pgclone/")
PGCLONE_CELERY_QUEUE = "pgclone"
PGCLONE_DUMP_CONFIGS = {
    "default": {},
    # Newsletter subscribers' addresses stay out of this one.
    "anonymous": {"exclude_models": ["shop.Subscriber"]},
    # Safe to hand out: personal values scrubbed in PostgreSQL, 10% of the customers
    # (and their orders), no subscribers.
    "safe": {
        "exclude_models": ["shop.Subscriber"],
        "scrub": {
            "shop.Customer": {"email": "email", "name": "name"},
            "auth.User": {
                "username": "text",
                "email": "email",
                "first_name": "first_name",
                "last_name": "last_name",
                "password": "unusable_password",
            },
            "shop.Order": {"details": "keep"},  # item counts and a delivery word
            "admin.LogEntry": {
                "object_repr": "text",  # may name a customer
                "object_id": "keep",
                "change_message": "keep",  # which fields changed, not their values
            },
        },
        # Every other column that can hold text, decided by name (reviewed): the
        # catalog's, whole tables kept. Sessions are copied empty without a word.
        "tables": {"public.shop_product": "keep", "public.auth_group": "keep"},
        "subset": {"shop.Customer": {"percent": 10}},
    },
}
