"""Where only scrubbed data may arrive (``require_scrubbed``): what counts as a
scrubbed dump, and what a restore there refuses.

``PGCLONE_REQUIRE_SCRUBBED = True`` requires it of every restore and trial
restore, whatever the restore config; a restore config's ``require_scrubbed``
of the restores made with it. Either way:

- a dump is taken only when it counts as scrubbed (:func:`pgclone.payloads.counts_as_scrubbed`,
  the one rule every part reads) *and* its manifest's signature checked with a
  configured key, whatever PGCLONE_ALLOW_UNSIGNED says: whoever can write to
  the storage can write ``"scrubbed": true`` into a manifest, not sign it;
- a database on the server (``:NAME``) holds whatever it holds, so none is
  taken but this database's own ``:previous`` and ``:current`` (what it held
  before, and what it holds).

It is checked when a restore is asked for (nothing is queued) and again in the
worker before any database is created (the worker's settings count there).
"""

from __future__ import annotations

from typing import Any

from pgclone import conf
from pgclone.exceptions import UnscrubbedDumpRefused
from pgclone.payloads import Source, counts_as_scrubbed
from pgclone.pg import databases
from pgclone.storage import keys, signing


def in_force(configured: bool) -> bool:
    """Whether a restore must take scrubbed data only: PGCLONE_REQUIRE_SCRUBBED,
    or its restore config's ``require_scrubbed`` (``configured``)."""
    return conf.require_scrubbed() or configured


def _why(config: str | None, configured: bool) -> str:
    if conf.require_scrubbed() or not configured:
        return "PGCLONE_REQUIRE_SCRUBBED is on here"
    return f"the restore config {config!r} has require_scrubbed"


def dump_refusal(
    key: keys.DumpKey, manifest: dict[str, Any], config: str | None = None, configured: bool = False
) -> str:
    """Why a restore that requires scrubbed data can't take this dump ("" when
    it can): not scrubbed, or not signed with a configured key."""
    why = _why(config, configured)
    if not counts_as_scrubbed(manifest):
        return (
            f"Dump {key} is not scrubbed, and {why} (require_scrubbed): restore a dump made "
            "with a config that has 'scrub' (`manage.py pgclone ls --long` marks them)."
        )
    if not conf.signing_key():
        return (
            f"Dump {key} says it is scrubbed, but no PGCLONE_SIGNING_KEY is set here, and {why} "
            "(require_scrubbed): only a signed manifest is believed, since whoever can write "
            "to the storage can write 'scrubbed' into one. Set PGCLONE_SIGNING_KEY here and "
            "on the machines that dump, to the same secret."
        )
    problem, signed = signing.examine(key, manifest)
    if not signed:
        return (
            f"Dump {key} says it is scrubbed, but its manifest is not signed with "
            "PGCLONE_SIGNING_KEY (or one of PGCLONE_SIGNING_KEY_FALLBACKS), and "
            f"{why} (require_scrubbed): only a signed manifest is believed, whatever "
            "PGCLONE_ALLOW_UNSIGNED says. Restore a scrubbed dump made with the signing key."
            + (f" {problem}" if problem else "")
        )
    return ""


def refuse_dump(
    key: keys.DumpKey, manifest: dict[str, Any], config: str | None, configured: bool
) -> None:
    """Raise UnscrubbedDumpRefused when :func:`dump_refusal` has a reason."""
    problem = dump_refusal(key, manifest, config, configured)
    if problem:
        raise UnscrubbedDumpRefused(problem)


def refuse_database(source: Source, live: str, config: str | None, configured: bool) -> None:
    """A database on the server is refused, but ``live``'s own ``:previous`` and ``:current``."""
    which = source.label[1:]
    if which in databases.COPY_SUFFIXES and source.name == databases.copy_name(live, which):
        return
    raise UnscrubbedDumpRefused(
        f"{source.label!r} is a database on the server, not a dump, and "
        f"{_why(config, configured)} (require_scrubbed): none is copied here but this "
        "database's own :previous and :current. Restore a scrubbed dump instead."
    )


def refuse(
    source: Source, manifest: dict[str, Any] | None, live: str, config: str | None, configured: bool
) -> None:
    """Refuse ``source`` when scrubbed data is required and it is not that
    (``manifest``: the dump's, for a dump)."""
    if not in_force(configured):
        return
    if not source.is_dump:
        refuse_database(source, live, config, configured)
        return
    refuse_dump(keys.parse_key(source.key), manifest or {}, config, configured)
