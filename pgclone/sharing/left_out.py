"""The tables whose rows a dump leaves out: the models of ``exclude_models``
(and those referencing them), pgclone's own job tables, the config's
``exclude_tables``, the tables holding credentials that a scrubbed dump copies
empty, and every table referencing one of those. One computation for the dump
step, ``scrub-check`` and ``verify --leaks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgclone.models import Job, JobStep
from pgclone.pg import postgres, search_path
from pgclone.sharing import exclusions, planned_dump, sections

# The job tables of the dumped database are never copied: history belongs to
# each environment, not to the data.
OWN_TABLES = (Job._meta.db_table, JobStep._meta.db_table)


@dataclass(frozen=True)
class LeftOut:
    path: list[str]  # the schemas where the project finds its tables
    excluded: list[tuple[str, str]]  # (schema, table), but those referencing them
    referencing: list[tuple[str, str]]  # the tables referencing those (raw SQL's too)
    names: list[str]  # as the manifest names them, but ``referencing``
    cascaded: list[str]  # models left out because they reference excluded ones

    @property
    def tables(self) -> list[tuple[str, str]]:
        return [*self.excluded, *self.referencing]


def left_out(
    conn: postgres.ConnInfo,
    exclude_models: tuple[str, ...],
    sharing: sections.Sharing,
    connection: Any = None,
) -> LeftOut:
    """What a dump of ``conn``'s database leaves out; ``connection``: one of
    pgclone's to it, if the caller has one open (else one is opened here)."""
    models, cascaded = exclusions.excluded_tables(list(exclude_models))
    with postgres.session(conn, connection) as connection:
        # Django's names, in the schemas where the project's sessions find them.
        path = search_path.project_path(conn, connection)  # once: the plan finds models there
        found = search_path.qualify(conn, {*models, *OWN_TABLES}, path, connection)
        excluded = sorted(found.values())
        # Tables left out by name: exclude_tables, and the credentials a scrubbed dump empties.
        by_name = planned_dump.left_out(conn, sharing, connection)
        named = [t for t in by_name if t not in excluded]
        excluded = sorted({*excluded, *named})
        # Tables Django does not know (made by raw SQL) may reference those too.
        referencing = postgres.tables_referencing(conn, excluded, connection)
    names = [*models, *(postgres.display_name(*table) for table in named)]
    return LeftOut(path, excluded, referencing, names, cascaded)
