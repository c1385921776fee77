"""The dump config's decisions on tables by name: ``tables`` and ``exclude_tables``.

``tables`` maps ``"schema.table"`` names (any table, Django's or raw SQL's) to
``"keep"`` (the whole table copied as it is: a reviewed decision) or to
{column: rule}, the rules of :mod:`pgclone.sharing.scrub` (``keep`` among
them). ``exclude_tables`` lists ``"schema.table"`` names whose rows the dump
leaves out (their definition stays: restored empty). A name is one table,
never a pattern. Parsed without a database: that the tables and columns exist
is checked when a dump reads the catalog (:mod:`pgclone.sharing.review`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from pgclone.exceptions import ConfigurationError
from pgclone.sharing import scrub

KEEP = "keep"
_PATTERN_CHARACTERS = set("*?%[]")


@dataclass(frozen=True)
class TableDecision:
    """What a config decides for one table named in ``tables``."""

    schema: str
    name: str
    whole: bool = False  # "keep": every column kept as it is
    columns: tuple[tuple[str, tuple[scrub.Rule, ...]], ...] = ()  # (column, rules)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    def rules(self) -> dict[str, tuple[scrub.Rule, ...]]:
        return dict(self.columns)


@dataclass(frozen=True)
class Decisions:
    """A dump config's decisions by table name (empty without the keys)."""

    tables: tuple[TableDecision, ...] = ()
    exclude_tables: tuple[tuple[str, str], ...] = ()  # (schema, table)

    def named(self, schema: str, name: str) -> TableDecision | None:
        return next((t for t in self.tables if (t.schema, t.name) == (schema, name)), None)

    def digest_part(self) -> dict[str, Any]:
        return {
            "tables": sorted((asdict(t) for t in self.tables), key=json.dumps),
            "exclude_tables": sorted(map(list, self.exclude_tables)),
        }


def table_name(value: Any, where: str) -> tuple[str, str]:
    """``"schema.table"`` as (schema, table): one table, exactly as the catalog names it."""
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 2 or not all(parts) or _PATTERN_CHARACTERS & set(value):
        raise ConfigurationError(
            f"{where}: {value!r} is not a table name; write 'schema.table' as the catalog "
            "spells them (such as 'public.django_session'), one table per name, no pattern."
        )
    return parts[0], parts[1]


def parse_tables(value: Any, where: str) -> tuple[TableDecision, ...]:
    """The decisions of a ``tables`` section: {"schema.table": "keep" | {column: rule}}."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"{where} must be a dict of 'schema.table' names to 'keep' or {{column: rule}}."
        )
    found = []
    for label, spec in value.items():
        schema, name = table_name(label, where)
        at = f"{where}[{label!r}]"
        if spec == KEEP:
            found.append(TableDecision(schema, name, whole=True))
            continue
        if not isinstance(spec, dict) or not spec:
            raise ConfigurationError(
                f"{at} must be 'keep' (the whole table as it is) or a dict of its column "
                f"names to rules; got {spec!r}."
            )
        columns = []
        for column, rule in spec.items():
            if not isinstance(column, str) or not column:
                raise ConfigurationError(f"{at}: {column!r} is not a column name.")
            columns.append((column, scrub.parse(rule, f"{at}[{column!r}]")))
        found.append(TableDecision(schema, name, columns=tuple(columns)))
    return tuple(found)


def parse_exclude_tables(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigurationError(f"{where} must be a list of 'schema.table' names.")
    return tuple(dict.fromkeys(table_name(item, where) for item in value))


def parse(tables: Any, exclude_tables: Any, where: str) -> Decisions:
    """A config's ``tables`` and ``exclude_tables`` (``where`` names the config)."""
    decided = parse_tables(tables, f"{where}['tables']")
    excluded = parse_exclude_tables(exclude_tables, f"{where}['exclude_tables']")
    both = sorted(t.label for t in decided if (t.schema, t.name) in excluded)
    if both:
        raise ConfigurationError(
            f"{where} names {', '.join(both)} in both 'tables' and 'exclude_tables': "
            "a table is either copied (as 'tables' says) or left out, not both."
        )
    return Decisions(decided, excluded)


def digest(decided: dict[str, str]) -> str:
    """A stable fingerprint of what a dump decided for each column that needs a
    decision ({"schema.table.column" or "schema.table": decision})."""
    text = json.dumps({"version": scrub.RULES_VERSION, "decided": decided}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
