"""Every PGCLONE_* setting, with its default, read when asked for.

Reading settings lazily lets tests and projects change them with
``override_settings`` and keeps importing pgclone free of side effects.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

from pgclone.exceptions import SettingInvalid

DEFAULT_STORAGE_LOCATION = ".pgclone/"
DEFAULT_RESTORE_CONFIG = {"pre_swap_hooks": ["migrate"]}


def _get(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def as_set(name: str) -> Any:
    """A setting as the project wrote it (None when unset), for the system checks,
    which judge its type before any function below converts it."""
    return _get(name, None)


def health_max_age() -> str | None:
    """How old the newest dump may be for the django-health-check backend
    (``"26h"``; None: ``health``'s default)."""
    return _get("PGCLONE_HEALTH_MAX_AGE", None)


def health_databases() -> list[str] | None:
    """The dumped databases the django-health-check backend looks at (None: every one)."""
    return _get("PGCLONE_HEALTH_DATABASES", None)


def storage_location() -> str:
    """Where dumps live: a folder (relative to BASE_DIR) or ``s3://bucket/prefix``."""
    return _get("PGCLONE_STORAGE_LOCATION", DEFAULT_STORAGE_LOCATION)


def s3_endpoint_url() -> str | None:
    """A custom S3 endpoint (MinIO, DigitalOcean Spaces…); None uses boto3's own lookup."""
    return _get("PGCLONE_S3_ENDPOINT_URL", None)


def s3_max_attempts() -> int:
    """Attempts per S3 request: errors (5xx, throttling, timeouts) are retried with backoff."""
    return int(_get("PGCLONE_S3_MAX_ATTEMPTS", 8))


def s3_extra_args() -> Any:
    """Extra arguments of every S3 write (put_object, create_multipart_upload), such as
    ``{"ServerSideEncryption": "AES256"}``; a dict (the system check says otherwise)."""
    value = _get("PGCLONE_S3_EXTRA_ARGS", None)
    return {} if value is None else value


def local_sources() -> list[str] | None:
    """The databases ``restore :NAME`` may copy; None allows any on the server
    (``:previous`` and ``:current`` are always allowed)."""
    value = _get("PGCLONE_LOCAL_SOURCES", None)
    return None if value is None else list(value)


def signing_key() -> str | None:
    """The secret manifests are signed with (HMAC-SHA256); None signs nothing."""
    return _get("PGCLONE_SIGNING_KEY", None) or None


def signing_key_fallbacks() -> Any:
    """Older signing keys, as Django's SECRET_KEY_FALLBACKS: manifests and trial records
    signed with one still check, nothing new is signed with them. A list of strings
    (the system check pgclone.E012 says otherwise)."""
    value = _get("PGCLONE_SIGNING_KEY_FALLBACKS", None)
    return [] if value is None else value


def scrub_key() -> str:
    """The key of the scrub rules' digests: PGCLONE_SCRUB_KEY, or one derived from SECRET_KEY."""
    import hashlib
    import hmac

    key = _get("PGCLONE_SCRUB_KEY", None)
    if key:
        return str(key)
    secret = str(settings.SECRET_KEY).encode()
    return hmac.new(secret, b"pgclone.scrub_key", hashlib.sha256).hexdigest()


def allow_unsigned() -> bool:
    """With a signing key: whether dumps without a signature may still be restored."""
    return bool(_get("PGCLONE_ALLOW_UNSIGNED", False))


def require_scrubbed() -> bool:
    """True: every restore and trial restore takes only scrubbed dumps with a signed
    manifest, whatever its restore config (and, of the databases on the server, only
    the live one's :previous and :current)."""
    return bool(_get("PGCLONE_REQUIRE_SCRUBBED", False))


def encryption_recipients() -> Any:
    """age public keys (``age1…``) every new dump is encrypted to; empty encrypts nothing.
    A list of strings (the system check pgclone.E010 says otherwise)."""
    value = _get("PGCLONE_ENCRYPTION_RECIPIENTS", None)
    return [] if value is None else value


def encryption_identities() -> Any:
    """Paths of age identity files (secret keys), read by the workers that restore."""
    value = _get("PGCLONE_ENCRYPTION_IDENTITIES", None)
    return [] if value is None else value


def dump_configs() -> dict[str, dict[str, Any]]:
    """Named dump configurations; ``default`` is used when none is named."""
    found = _get("PGCLONE_DUMP_CONFIGS", {})
    return {} if found is None else found  # anything but a dict: pgclone.E003


def restore_configs() -> dict[str, dict[str, Any]]:
    """Named restore configurations; ``default`` is used when none is named."""
    found = _get("PGCLONE_RESTORE_CONFIGS", {})
    return {} if found is None else found  # anything but a dict: pgclone.E003


def allow_restore() -> bool:
    """False refuses every restore, wherever it is asked for."""
    return bool(_get("PGCLONE_ALLOW_RESTORE", True))


def allow_superuser_restore() -> bool:
    """True lets a restore run as a superuser (or a role as powerful): it then runs
    the dump's code with those rights. Off by default; system check W015 says so."""
    return bool(_get("PGCLONE_ALLOW_SUPERUSER_RESTORE", False))


def notify_email() -> bool:
    """Whether failed jobs are mailed to ADMINS."""
    return bool(_get("PGCLONE_NOTIFY_EMAIL", False))


def notify_webhook() -> Any:
    """The http(s) URL failed jobs are POSTed to; None posts nothing. Anything but
    such a URL is refused (the system check pgclone.E011 says so)."""
    return _get("PGCLONE_NOTIFY_WEBHOOK", None) or None


def template_database(alias: str) -> str | None:
    """The database a restore's temporary database is copied from: an
    administrator's template holding the extensions only a superuser can create;
    None starts from an empty one. A name, or a dict of names by database alias
    (anything else: system check pgclone.E013)."""
    value = _get("PGCLONE_TEMPLATE_DATABASE", None)
    if isinstance(value, dict):
        value = value.get(alias)
    return value or None


def celery_queue() -> str | None:
    """The queue pgclone's tasks go to; None means Celery's default queue."""
    return _get("PGCLONE_CELERY_QUEUE", None)


def zstd_level() -> int:
    """zstd compression level of dumps (1 is fastest, 19 smallest)."""
    return int(_get("PGCLONE_ZSTD_LEVEL", 3))


# More sessions than this is a mistake, not a machine: each is a server connection
# held for the whole step (PostgreSQL allows 100 by default, which Django, the swap
# and the other workers share), and past a few dozen the disks bound a copy anyway.
MAX_JOBS = 64
DUMP_JOBS_SETTING = "PGCLONE_DUMP_JOBS"
RESTORE_JOBS_SETTING = "PGCLONE_RESTORE_JOBS"


def jobs_problem(name: str, value: Any) -> str | None:
    """What is wrong with the value of a jobs setting (None: nothing, or unset),
    in the words of its system check and of the error a job fails with."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} is {value!r} (a {type(value).__name__}), not a whole number of sessions."
    if value < 1:
        return f"{name} is {value}: a job needs at least 1 session."
    if value > MAX_JOBS:
        return (
            f"{name} is {value}: more than {MAX_JOBS} sessions, each a server connection "
            "held for the whole step."
        )
    return None


def jobs_hint(name: str) -> str:
    return (
        f"Set {name} to a whole number from 1 to {MAX_JOBS} (an int, not a string: "
        f"int(os.environ[...]) if it comes from the environment), or remove it for the default."
    )


def _jobs(name: str, default: int) -> int:
    value = _get(name, None)
    problem = jobs_problem(name, value)
    if problem:
        raise SettingInvalid(f"{problem} {jobs_hint(name)}")
    return default if value is None else value


def restore_jobs() -> int:
    """Sessions a restore loads the data with at once, and pg_restore's ``--jobs``
    for the indexes and constraints (system check pgclone.E015 says a value is bad)."""
    return _jobs(RESTORE_JOBS_SETTING, min(os.cpu_count() or 1, 4))


def dump_jobs() -> int:
    """Sessions a dump copies tables (and ranges of big ones) with at once, and the
    threads zstd compresses the dump on (system check pgclone.E014 says a value is bad)."""
    return _jobs(DUMP_JOBS_SETTING, 2)


def temp_dir() -> str | None:
    """Where a restore from local storage unpacks the dump; None is the system's."""
    return _get("PGCLONE_TEMP_DIR", None)


def heartbeat_seconds() -> float:
    """How often a running step records that its worker is alive."""
    return float(_get("PGCLONE_HEARTBEAT_SECONDS", 5))


def stale_job_seconds() -> float:
    """A running job whose heartbeat is older than this has lost its worker."""
    return float(_get("PGCLONE_STALE_JOB_SECONDS", max(60.0, 6 * heartbeat_seconds())))


def queued_step_timeout() -> float:
    """How long a job may wait for a worker to take its next step before it fails."""
    return float(_get("PGCLONE_QUEUED_STEP_TIMEOUT", 6 * 3600))


def swap_timeout_seconds() -> float:
    """How long the swap keeps retrying the renames (new connections wait meanwhile)
    before it gives up and leaves the live database as it was."""
    return float(_get("PGCLONE_SWAP_TIMEOUT", 30))


def swap_wait_seconds() -> float:
    """How long a swap waits for other jobs that use the database it replaces."""
    return float(_get("PGCLONE_SWAP_WAIT_SECONDS", 600))


def kept_copies() -> Any:
    """PGCLONE_KEPT_COPIES: how many kept copies one server holds at most."""
    return _get("PGCLONE_KEPT_COPIES", 5)


def kept_copies_bytes() -> Any:
    """PGCLONE_KEPT_COPIES_BYTES: how many bytes they take at most (None: no bound)."""
    return _get("PGCLONE_KEPT_COPIES_BYTES", None)


def base_dir() -> str | None:
    base = getattr(settings, "BASE_DIR", None)
    return str(base) if base is not None else None
