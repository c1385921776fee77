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
from pgclone.pg import postgres
from pgclone.sharing import credentials, deciding, review
from pgclone.sharing.left_out import OWN_TABLES, LeftOut, left_out  # noqa: F401 (used here)


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
