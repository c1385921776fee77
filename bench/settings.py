"""Settings of the bench project: pgclone as a user would set it up, driven by
environment variables that ``bench/session.py`` sets for the command and the worker."""

from __future__ import annotations

import os
from pathlib import Path

import pgconnection

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "pgclone-bench-only"  # noqa: S105 - a local bench
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# bench.shop: the bench database's tables as models, for the sharing round's configs.
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "pgclone", "bench.shop"]


def _db(name: str) -> dict[str, str]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }


# default holds the job tables; the other aliases are what is dumped and restored.
DATABASES = pgconnection.configure(
    {
        "default": _db(os.environ.get("BENCH_JOBS_DB", "pgclone_bench_jobs")),
        "data": _db(os.environ.get("BENCH_DATA_DB", "pgclone_bench_data")),
        "target": _db(os.environ.get("BENCH_TARGET_DB", "pgclone_bench_target")),
        "empty": _db(os.environ.get("BENCH_EMPTY_DB", "pgclone_bench_empty")),
        "data3x": _db(os.environ.get("BENCH_DATA3X_DB", "pgclone_bench_data3x")),
        "one_table": _db(os.environ.get("BENCH_ONE_TABLE_DB", "pgclone_bench_one_table")),
    }
)

CELERY_BROKER_URL = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/13")
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 6 * 3600
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7 * 3600}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

PGCLONE_CELERY_QUEUE = os.environ.get("BENCH_QUEUE", "pgclone-bench")
PGCLONE_STORAGE_LOCATION = os.environ.get("PGCLONE_STORAGE_LOCATION", str(BASE_DIR / ".work"))
PGCLONE_S3_ENDPOINT_URL = os.environ.get("PGCLONE_S3_ENDPOINT_URL") or None
# The sharing round's planned dumps (bench/sharing_round.py): the personal
# columns scrubbed, and a subset rooted at a tenth of the customers.
PGCLONE_DUMP_CONFIGS = {
    "default": {},
    "scrubbed": {
        "scrub": {
            "shop.Customer": {
                "name": "name",
                "email": "email",
                "profile": [{"rule": "hash", "path": ["token"]}],
            },
            "shop.Event": {
                "payload": [{"rule": "hash", "path": ["session"]}],
                "note": "text",
            },
        },
        # The other columns that can hold text, decided by name: kept, so that the
        # dump does the work the bench has always measured (its data is generated;
        # a project's orders.shipping, an address, would get a rule).
        "tables": {
            "public.customers": {"country": "keep"},
            "public.products": "keep",
            "public.orders": "keep",
            "public.events": {"kind": "keep"},
        },
    },
    "subset": {"subset": {"shop.Customer": {"percent": 10}}},
}
# Restores without hooks: the bench measures pgclone, not `migrate`. The kept
# round's first restores keep a copy of what they loaded.
PGCLONE_RESTORE_CONFIGS = {
    "default": {"pre_swap_hooks": []},
    "keep": {"pre_swap_hooks": [], "keep_copy": True},
}
# The server is shared (tests, other runs): the bench's kept copies must not
# make it drop another's, oldest first, under the default limit of 5.
PGCLONE_KEPT_COPIES = 1000
# The bench builds its own databases as the server's superuser and restores
# only dumps of them: allowed here, and the warning about it silenced.
PGCLONE_ALLOW_SUPERUSER_RESTORE = True
SILENCED_SYSTEM_CHECKS = ["pgclone.W015"]
if os.environ.get("PGCLONE_TEMP_DIR"):
    PGCLONE_TEMP_DIR = os.environ["PGCLONE_TEMP_DIR"]
# Variants the bench can measure (unset: pgclone's defaults).
if os.environ.get("PGCLONE_ZSTD_LEVEL"):
    PGCLONE_ZSTD_LEVEL = int(os.environ["PGCLONE_ZSTD_LEVEL"])
if os.environ.get("PGCLONE_ENCRYPTION_RECIPIENTS"):  # comma separated
    PGCLONE_ENCRYPTION_RECIPIENTS = os.environ["PGCLONE_ENCRYPTION_RECIPIENTS"].split(",")
if os.environ.get("PGCLONE_DUMP_JOBS"):
    PGCLONE_DUMP_JOBS = int(os.environ["PGCLONE_DUMP_JOBS"])
if os.environ.get("PGCLONE_RESTORE_JOBS"):
    PGCLONE_RESTORE_JOBS = int(os.environ["PGCLONE_RESTORE_JOBS"])
