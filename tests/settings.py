"""Settings of the project the tests run against (also used by the test worker)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "pgclone-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "pgclone",
    "tests.testapp",
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

# The test worker is another process: it must use the database pytest-django
# created, so the name can come from the environment.
# One queue and one restore target per test session, shared with the worker it
# starts through the environment, so that concurrent runs on one machine never
# take each other's tasks or databases.
_SESSION = os.environ.setdefault("PGCLONE_TEST_SESSION", uuid.uuid4().hex[:8])
os.environ.setdefault("PGCLONE_TEST_QUEUE", f"pgclone-tests-{_SESSION}")
os.environ.setdefault("PGCLONE_TEST_TARGET", f"pgclone_target_{_SESSION}")

_DEFAULT = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": os.environ.get("PGCLONE_TEST_DATABASE", "pgclone_tests"),
    "HOST": os.environ.get("PGHOST", "127.0.0.1"),
    "PORT": os.environ.get("PGPORT", "5432"),
    "USER": os.environ.get("PGUSER", "postgres"),
    "PASSWORD": os.environ.get("PGCLONE_TEST_PASSWORD", ""),
    # pytest-django's database: one per session too.
    "TEST": {"NAME": f"test_pgclone_{_SESSION}"},
}
# PGCLONE_TEST_DRIVER says which driver the test environment has (nox sets it):
# with psycopg2 the settings are wrapped with django-pgconnection as its
# projects' are, with psycopg (3) they are plain, and pgclone routes hooks itself.
DRIVER = os.environ.get("PGCLONE_TEST_DRIVER", "psycopg2")
DATABASES = {
    "default": _DEFAULT,
    # The same database seen by a role without rights on its tables, and a
    # database that does not exist: both make pg_dump fail for real.
    "limited": {**_DEFAULT, "USER": f"pgclone_limited_{_SESSION}"},
    "gone": {**_DEFAULT, "NAME": "pgclone_tests_gone"},
    # Restores go here (one database per test session), except the tests
    # of restoring the database that holds the job history itself.
    "target": {**_DEFAULT, "NAME": os.environ["PGCLONE_TEST_TARGET"]},
    # The restore target seen by a role that may create databases but not
    # end a superuser's sessions.
    "owner": {
        **_DEFAULT,
        "NAME": os.environ["PGCLONE_TEST_TARGET"],
        "USER": f"pgclone_owner_{_SESSION}",
    },
    # The restore target seen by its owner, a role of this session's own, in
    # tests/integration/test_extensions.py.
    "geo": {
        **_DEFAULT,
        "NAME": os.environ["PGCLONE_TEST_TARGET"],
        "USER": f"pgclone_geo_{_SESSION}",
    },
    # A database whose name needs quoting everywhere.
    "odd": {**_DEFAULT, "NAME": f"pgclone Odd \"Ünï\" 'db' {_SESSION}"},
    # The test database with a password set (trust auth ignores it): it must
    # never show in a process listing, a log or a job record.
    "secret": {**_DEFAULT, "PASSWORD": "pgclone-SeCrEt-pw-4711"},
}

if DRIVER == "psycopg2":
    import pgconnection

    DATABASES = pgconnection.configure(DATABASES)

CELERY_BROKER_URL = os.environ.get("PGCLONE_TEST_BROKER", "redis://127.0.0.1:6379/14")
CELERY_TASK_DEFAULT_QUEUE = os.environ["PGCLONE_TEST_QUEUE"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 6 * 3600
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7 * 3600}
# The multi-host tests send each step to a given worker's queue.
CELERY_TASK_ROUTES = json.loads(os.environ.get("PGCLONE_TEST_ROUTES", "{}"))
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

PGCLONE_STORAGE_LOCATION = os.environ.get("PGCLONE_TEST_STORAGE", str(BASE_DIR / ".pgclone"))
PGCLONE_S3_ENDPOINT_URL = os.environ.get("PGCLONE_TEST_S3_ENDPOINT") or None
PGCLONE_HEARTBEAT_SECONDS = 1
PGCLONE_STALE_JOB_SECONDS = float(os.environ.get("PGCLONE_TEST_STALE_SECONDS", 5))
PGCLONE_SWAP_WAIT_SECONDS = float(os.environ.get("PGCLONE_TEST_SWAP_WAIT_SECONDS", 600))
PGCLONE_S3_MAX_ATTEMPTS = int(os.environ.get("PGCLONE_TEST_S3_ATTEMPTS", 8))
PGCLONE_ALLOW_RESTORE = os.environ.get("PGCLONE_TEST_ALLOW_RESTORE", "1") == "1"
# Most tests restore as the server's superuser (they create and own the source
# databases as it); tests/integration/test_planted_code.py restores as a plain
# database owner with this off, as the README recommends.
PGCLONE_ALLOW_SUPERUSER_RESTORE = os.environ.get("PGCLONE_TEST_ALLOW_SUPERUSER", "1") == "1"
SILENCED_SYSTEM_CHECKS = ["pgclone.W015"] if PGCLONE_ALLOW_SUPERUSER_RESTORE else []
# tests/integration/test_extensions.py's worker copies restores' databases from its template.
PGCLONE_TEMPLATE_DATABASE = os.environ.get("PGCLONE_TEST_TEMPLATE_DATABASE") or None
# The security tests run `manage.py pgclone` with these (tests/integration/test_security.py).
PGCLONE_LOCAL_SOURCES = json.loads(os.environ.get("PGCLONE_TEST_LOCAL_SOURCES", "null"))
PGCLONE_SIGNING_KEY = os.environ.get("PGCLONE_TEST_SIGNING_KEY") or None
PGCLONE_SIGNING_KEY_FALLBACKS = json.loads(
    os.environ.get("PGCLONE_TEST_SIGNING_KEY_FALLBACKS", "[]")
)
PGCLONE_ALLOW_UNSIGNED = os.environ.get("PGCLONE_TEST_ALLOW_UNSIGNED") == "1"
# tests/integration/test_require_scrubbed.py's workers and commands take scrubbed dumps only.
PGCLONE_REQUIRE_SCRUBBED = os.environ.get("PGCLONE_TEST_REQUIRE_SCRUBBED") == "1"
PGCLONE_NOTIFY_WEBHOOK = os.environ.get("PGCLONE_TEST_NOTIFY_WEBHOOK") or None
PGCLONE_CELERY_QUEUE = os.environ.get("PGCLONE_TEST_CELERY_QUEUE") or None
# The encryption tests start workers with identities of their own
# (tests/integration/test_encryption.py); PGCLONE_AGE_IDENTITY is read from the
# environment by pgclone itself.
PGCLONE_ENCRYPTION_RECIPIENTS = json.loads(
    os.environ.get("PGCLONE_TEST_ENCRYPTION_RECIPIENTS", "[]")
)
PGCLONE_ENCRYPTION_IDENTITIES = json.loads(
    os.environ.get("PGCLONE_TEST_ENCRYPTION_IDENTITIES", "[]")
)
PGCLONE_DUMP_CONFIGS = {
    "default": {},
    "kept": {"keep_last": 2},
    "no_secrets": {"exclude_models": ["testapp.Secret"]},
    "with_hook": {"pre_dump_hooks": "testapp_mark"},
    # Scrubbed and subset configs, for the workers of tests/integration/test_planned.py.
    **json.loads(os.environ.get("PGCLONE_TEST_DUMP_CONFIGS", "{}")),
}
# tests/integration/test_parallel_restore.py's workers restore with these.
PGCLONE_TEMP_DIR = os.environ.get("PGCLONE_TEST_TEMP_DIR") or None
PGCLONE_RESTORE_CONFIGS = json.loads(os.environ.get("PGCLONE_TEST_RESTORE_CONFIGS", "{}"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TIME_ZONE = "UTC"

# A beat process started by the tests turns this on: a dump every second.
if os.environ.get("PGCLONE_TEST_BEAT_SCHEDULE"):
    CELERY_BEAT_SCHEDULE = {
        "pgclone-nightly-dump": {
            "task": "pgclone.scheduled_dump",
            "schedule": 1.0,
            "kwargs": {"config": "kept"},
        }
    }
# tests/integration/test_bad_input.py's workers and commands run with bad values
# of these (JSON: "0", "true", "\"4\"").
if "PGCLONE_TEST_DUMP_JOBS" in os.environ:
    PGCLONE_DUMP_JOBS = json.loads(os.environ["PGCLONE_TEST_DUMP_JOBS"])
if "PGCLONE_TEST_RESTORE_JOBS" in os.environ:
    PGCLONE_RESTORE_JOBS = json.loads(os.environ["PGCLONE_TEST_RESTORE_JOBS"])
