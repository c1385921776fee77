"""Which databases on the server are pgclone's own.

Any role with CREATEDB can create a database under any free name, even
``LIVE__previous`` or ``pgclone_old_…``, and mark it a template (which lets
every role copy it). So a name proves nothing: pgclone copies, drops, swaps
or re-opens a ``:previous`` / ``:current`` copy or a ``pgclone_…`` database
only when

- it is owned by the role pgclone connects as, or by the live database's
  owner (a restore hands the new live database to that owner, and the old one
  becomes ``:previous``),
- it is not a template, and
- its comment, when it holds pgclone's *mark* (``pgclone:<job id>:<live>``,
  or the swap's marker), names the live database it belongs to.

The owner is the proof (any role may comment on its own databases): the
mark says which live database, and which job, one of pgclone's belongs to.
Databases made by earlier versions carry no mark (a ``:previous`` keeps the
live database's own comment): one of the right owner is accepted, and marked
when it is used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgclone.pg import driver
from pgclone.pg.databases import execute, id_prefix, job_digits
from pgclone.pg.driver import sql

PREFIX = "pgclone:"
SWAP_PREFIX = "pgclone swap: "


@dataclass(frozen=True)
class Mark:
    job: str
    live: str


@dataclass(frozen=True)
class Database:
    name: str
    owner: str
    ours_by_owner: bool  # owned by the role pgclone connects as, or the live database's owner
    template: bool
    comment: str | None

    @property
    def mark(self) -> Mark | None:
        return read_mark(self.comment)


def mark_text(job_id: Any, live: str) -> str:
    return f"{PREFIX}{job_id}:{live}"


def read_mark(comment: str | None) -> Mark | None:
    """The job and live database a mark (or the swap's marker) names; None if none."""
    if not comment:
        return None
    if comment.startswith(SWAP_PREFIX):
        try:
            data = json.loads(comment[len(SWAP_PREFIX) :])
            return Mark(str(data["job"]), str(data["live"]))
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
    if comment.startswith(PREFIX):
        job, sep, live = comment[len(PREFIX) :].partition(":")
        if sep and job:
            return Mark(job, live)
    return None


def look(connection: driver.Connection, names: list[str], lives: list[str]) -> dict[str, Database]:
    """What the catalog says of those of ``names`` that exist; ``lives`` are the
    live databases whose owners count as pgclone's role."""
    rows = execute(
        connection,
        "SELECT d.datname, pg_catalog.pg_get_userbyid(d.datdba), "
        "d.datdba IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user "
        "UNION SELECT l.datdba FROM pg_catalog.pg_database l WHERE l.datname = ANY(%s)), "
        "d.datistemplate, pg_catalog.shobj_description(d.oid, 'pg_database') "
        "FROM pg_catalog.pg_database d WHERE d.datname = ANY(%s)",
        [list(lives), list(names)],
    )
    return {row[0]: Database(*row) for row in rows}


def refusal(found: Database, live: str, job_id: Any = None) -> str | None:
    """Why ``found`` is not pgclone's database for ``live`` (and job ``job_id``,
    when given); None when it is."""
    if not found.ours_by_owner:
        return f"it is owned by {found.owner}, not by the role pgclone connects as"
    if found.template:
        return "it is a template database"
    mark = found.mark
    if mark is not None and mark.live != live:
        return f"pgclone made it for {mark.live!r}"
    if mark is not None and job_id is not None and job_digits(mark.job) != job_digits(job_id):
        return f"it belongs to another job ({mark.job})"
    return None


def reason(connection: driver.Connection, name: str, live: str, job_id: Any = None) -> str | None:
    """None when ``name`` is absent or pgclone's; else why it is not."""
    found = look(connection, [name], [live]).get(name)
    return refusal(found, live, job_id) if found is not None else None


def check(connection: driver.Connection, name: str, live: str, job_id: Any = None) -> str | None:
    """None when ``name`` is absent or pgclone's; else a sentence saying why not."""
    why = reason(connection, name, live, job_id)
    return f"database {name!r} is not pgclone's: {why}" if why else None


def set_mark(connection: driver.Connection, name: str, job_id: Any, live: str) -> None:
    execute(
        connection,
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(mark_text(job_id, live))
        ),
    )


def job_of(name: str) -> str:
    """How the id of the job a ``pgclone_tmp_…`` / ``pgclone_old_…`` name carries begins."""
    return id_prefix(name.split("_")[2])


def sweepable(
    found: Database, lives: set[str], known_job: Callable[[str], bool | None]
) -> str | None:
    """The job a ``pgclone_tmp_…`` / ``pgclone_old_…`` database belongs to when
    the sweep may act on it (None when not): pgclone's by its owner, not a
    template, its mark naming that job and one of this project's ``lives``,
    the job in the job table (``known_job``: None when that can't be read,
    the database holding it being closed). One made by an earlier version,
    unmarked, counts only when the job table vouches for it."""
    if not found.ours_by_owner or found.template:
        return None
    named = job_of(found.name)
    mark = found.mark
    if mark is None:
        return named if known_job(named) else None
    if mark.live not in lives or job_digits(mark.job) != job_digits(named):
        return None
    return None if known_job(named) is False else mark.job
