"""The tables whose rows a dump leaves out, and what a scrubbing config decides.

One computation for the dump step and for ``scrub-check`` (and the system
check that runs it), so that both see the same tables: the models of
``exclude_models`` (and those referencing them), pgclone's own job tables, the
config's ``exclude_tables``, the tables holding credentials that a scrubbed
dump copies empty, and every table referencing one of those.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgclone import conf, configs
from pgclone.exceptions import PgCloneError
from pgclone.models import Job, JobStep
from pgclone.pg import postgres, search_path
from pgclone.sharing import credentials, deciding, exclusions, planned_dump, review, sections

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
    conn: postgres.ConnInfo, exclude_models: tuple[str, ...], sharing: sections.Sharing
) -> LeftOut:
    models, cascaded = exclusions.excluded_tables(list(exclude_models))
    # Django's names, in the schemas where the project's sessions find them.
    path = search_path.project_path(conn)  # read once: the plan finds its models there too
    excluded = sorted(search_path.qualify(conn, {*models, *OWN_TABLES}, path).values())
    # Tables left out by name: exclude_tables, and the credentials a scrubbed dump empties.
    named = [t for t in planned_dump.left_out(conn, sharing) if t not in excluded]
    excluded = sorted({*excluded, *named})
    # Tables Django does not know (made by raw SQL) may reference those too.
    referencing = postgres.tables_referencing(conn, excluded)
    names = [*models, *(postgres.display_name(*table) for table in named)]
    return LeftOut(path, excluded, referencing, names, cascaded)


@dataclass(frozen=True)
class ConfigReview:
    """What ``scrub-check`` says of one dump config."""

    config: str
    review: deciding.Review
    emptied: list[str]  # tables holding credentials, copied empty
    skeleton: str = ""


def review_config(name: str, alias: str, *, skeleton: bool = False) -> ConfigReview:
    """The decisions of the dump config ``name`` on the database of ``alias``."""
    config = configs.dump_config(name)
    conn = postgres.conn_info(alias)
    out = left_out(conn, config.exclude_models, config.sharing)
    known = credentials.table_names()
    emptied = [
        postgres.display_name(schema, table)
        for schema, table in out.excluded
        if table in known and config.scrub is not None
    ]
    with postgres.connect(conn) as connection, connection.cursor() as cursor:
        decided = review.decide(cursor, config.sharing, path=out.path, left_out=out.tables)
        text = ""
        if skeleton and decided.undecided:
            raw = _as_written(name)
            text = deciding.skeleton(
                decided.undecided,
                raw.get("scrub") or {},
                raw.get("tables") or {},
                review.suggestions(cursor, decided.undecided),
            )
    return ConfigReview(name, decided.review, emptied, text)


def _as_written(name: str) -> dict:
    """The dump config ``name`` as the settings write it."""
    defined = conf.dump_configs()
    return (defined.get(name) if isinstance(defined, dict) else None) or {}


def scrubbing_configs() -> list[str]:
    """The names of the dump configs with a ``scrub`` section (that parse)."""
    defined = conf.dump_configs()
    found = []
    for name in defined if isinstance(defined, dict) else ():
        try:
            if configs.dump_config(name).scrub is not None:
                found.append(name)
        except PgCloneError:  # pgclone.E003 says what is wrong with it
            continue
    return found
