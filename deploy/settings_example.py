"""pgclone's part of a production settings module: copy what you need into yours.

Values that differ between machines or environments come from the
environment (the systemd units read them from an EnvironmentFile,
docker-compose.yml sets them). deploy/README.md explains each choice; pgclone's
system checks (``manage.py check``) warn when the Celery values below are
missing (pgclone.W010, W011, W012).
"""

from __future__ import annotations

import os

from celery.schedules import crontab

INSTALLED_APPS = [
    "django.contrib.admin",  # optional: pgclone's job and dump pages
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pgclone",
    # ... your own apps, including the one that holds your hook commands
]

# Plain settings work with either driver: pgclone runs a restore's pre-swap
# hooks (migrate by default) on the restored copy itself. A psycopg2 project may
# instead wrap them with django-pgconnection (DATABASES = pgconnection.configure
# ({...})), which pgclone then uses; never with psycopg 3 (pgclone.E006).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DATABASE_NAME", "myproject"),
        "HOST": os.environ.get("DATABASE_HOST", "127.0.0.1"),
        "PORT": os.environ.get("DATABASE_PORT", "5432"),
        "USER": os.environ.get("DATABASE_USER", "myproject"),
        "PASSWORD": os.environ.get("DATABASE_PASSWORD", ""),
    }
}

# --- Celery ---------------------------------------------------------------------

# pgclone's steps go to a queue of their own, served by the workers started with
# `--queues pgclone`, so that a dump lasting an hour never delays other tasks.
PGCLONE_CELERY_QUEUE = "pgclone"

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
# pgclone keeps job state in its own tables and reads no task results.
CELERY_TASK_IGNORE_RESULT = True
# A worker takes one message at a time per process (pgclone.W010): a step
# waiting behind a long dump in a worker's prefetch buffer would go nowhere.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A hung pg_dump or pg_restore must not hold its worker forever (pgclone.W011).
# The limit applies to each step on its own: set it above your longest dump or
# restore_temp step. The worker kills the process running a step past it; the
# job is then failed and cleaned up by the stale-job sweep.
CELERY_TASK_TIME_LIMIT = 6 * 3600
# Redis hands an unacknowledged message to another worker after this many
# seconds; pgclone acknowledges its steps late, so it must exceed the time
# limit (pgclone.W012; Redis's own default is one hour).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 3600}
# Chains started by pgclone already go to PGCLONE_CELERY_QUEUE. This route sends
# the tasks celery beat starts (pgclone.scheduled_dump, pgclone.sweep) there too;
# without it they wait in Celery's default queue, which the pgclone workers do
# not read.
CELERY_TASK_ROUTES = {"pgclone.*": {"queue": PGCLONE_CELERY_QUEUE}}
# Keep running steps running when the worker loses its broker connection for a
# moment (this is Celery 5's default; setting it also silences its warning).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Run exactly one celery beat process: two would start every entry twice.
CELERY_BEAT_SCHEDULE = {
    # Fails jobs whose worker was lost (killed, out of memory, machine gone) and
    # removes what they left: a staged dump, a temporary database, a restore lock.
    "pgclone-sweep": {
        "task": "pgclone.sweep",
        "schedule": 60.0,
        # A sweep nobody ran within a minute is replaced by the next one.
        "options": {"expires": 55},
    },
    "pgclone-nightly-dump": {
        "task": "pgclone.scheduled_dump",
        "schedule": crontab(hour=3, minute=0),
        "kwargs": {"config": "nightly"},
    },
}

# --- pgclone --------------------------------------------------------------------

# S3 (or MinIO…) lets any worker on any machine run any step; a folder must be
# the same shared mount on every machine (see deploy/README.md, "Several hosts").
PGCLONE_STORAGE_LOCATION = os.environ.get("PGCLONE_STORAGE_LOCATION", "s3://my-bucket/dumps")
# None on AWS; the store's URL for MinIO and other S3-compatible stores.
PGCLONE_S3_ENDPOINT_URL = os.environ.get("PGCLONE_S3_ENDPOINT_URL") or None
# Restores replace the database: off unless this environment opts in (staging,
# review apps). Production should leave it off.
PGCLONE_ALLOW_RESTORE = os.environ.get("PGCLONE_ALLOW_RESTORE", "") == "1"
# Where a restore from a local folder unpacks the dump; None is the system's.
PGCLONE_TEMP_DIR = os.environ.get("PGCLONE_TEMP_DIR") or None
PGCLONE_ZSTD_LEVEL = 3

PGCLONE_DUMP_CONFIGS = {
    "default": {},
    "nightly": {
        "keep_last": 7,
        "keep_days": 30,
        # On Amazon RDS with PostGIS's tiger geocoder or topology, add the hook
        # described in deploy/README.md ("Managed PostgreSQL"):
        # "pre_dump_hooks": ["rds_prep"],
    },
}
PGCLONE_RESTORE_CONFIGS = {
    "default": {"pre_swap_hooks": ["migrate"], "reversible": False},
}
