"""pgclone: safe, streaming PostgreSQL dumps and restores for Django.

The public API is re-exported here lazily (importing pgclone must not touch
Django models before the app registry is ready)::

    import pgclone
    job = pgclone.dump(config="nightly")
    pgclone.ls("mydb")
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "cancel",
    "copy",
    "database_names",
    "dump",
    "job",
    "local_sources",
    "ls",
    "prune",
    "recent_jobs",
    "restore",
    "sweep",
    "trial_restore",
    "verify",
    "verify_latest",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pgclone import api

        return getattr(api, name)
    raise AttributeError(f"module 'pgclone' has no attribute {name!r}")
