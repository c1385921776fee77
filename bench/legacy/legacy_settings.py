"""Settings for django-pgclone 3.8: the database to dump and the one to restore into."""

from __future__ import annotations

import os

SECRET_KEY = "pgclone-bench-legacy"  # noqa: S105 - a local bench
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "pgclone"]


def _db(name: str) -> dict[str, str]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }


DATABASES = {
    "default": _db(os.environ.get("BENCH_LEGACY_TARGET_DB", "pgclone_bench_legacy")),
    "data": _db(os.environ.get("BENCH_DATA_DB", "pgclone_bench_data")),
}
PGCLONE_STORAGE_LOCATION = os.environ["BENCH_LEGACY_STORAGE"]
PGCLONE_PRE_SWAP_HOOKS: list[str] = []
PGCLONE_VALIDATE_DUMP_KEYS = False
