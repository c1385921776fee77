"""Which columns a scrubbed dump's config decides, and which it leaves undecided.

Pure: the catalog's columns (:func:`pgclone.pg.catalog.data_columns`) and
what the config says come in, a :class:`Review` comes out; the code that reads
them is :mod:`pgclone.sharing.review`. A column *needs a decision* when its
type can hold personal or secret data: a string type (text, character,
citext…), JSON, bytea, inet/cidr, geometry/geography, xml, hstore, tsvector,
or an array or domain of one of these. Its decision is a scrub rule, ``keep``,
its whole table kept by name, or its table's rows left out (emptied). Other
columns (numbers, dates, booleans, uuids…) are kept by default.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from pgclone.pg.catalog import DataColumn
from pgclone.sharing import decisions

NEEDS_DECISION = {
    "json", "jsonb", "bytea", "inet", "cidr", "geometry", "geography", "xml", "hstore",
    "tsvector",
}  # fmt: skip
STRING_CATEGORY = "S"
# Tables of Django's own whose values come from the code, not from users: kept.
KEPT_BY_PGCLONE = {
    "django_migrations": "applied migrations' names",
    "django_content_type": "the models' names",
    "auth_permission": "the permissions' names, from the code",
}


def needs_decision(column: DataColumn) -> bool:
    return column.category == STRING_CATEGORY or column.base in NEEDS_DECISION


@dataclass(frozen=True)
class Named:
    """A column as scrub-check and messages name it: ``app.Model.field`` when
    a model has it, else ``schema.table.column``."""

    column: DataColumn
    model: str | None = None  # the model's label
    field: str | None = None  # the field's name

    @property
    def name(self) -> str:
        if self.model and self.field:
            return f"{self.model}.{self.field}"
        return f"{self.column.schema}.{self.column.table}.{self.column.name}"

    def __str__(self) -> str:
        return f"{self.name} ({self.column.type_name})"


@dataclass(frozen=True)
class Review:
    undecided: tuple[Named, ...] = ()
    kept_by_default: tuple[Named, ...] = ()  # types that hold no personal data
    kept_by_pgclone: tuple[str, ...] = ()  # tables of KEPT_BY_PGCLONE found
    decided: dict[str, str] = field(default_factory=dict)  # what each column gets

    @property
    def digest(self) -> str:
        return decisions.digest(self.decided)


@dataclass(frozen=True)
class Asked:
    """What a config decides, by (schema, table): ``ruled`` columns (a rule,
    as the config writes it), tables ``kept`` whole, tables ``left_out``."""

    ruled: dict[tuple[str, str, str], str] = field(default_factory=dict)
    kept: frozenset[tuple[str, str]] = frozenset()
    left_out: frozenset[tuple[str, str]] = frozenset()


def review(
    columns: Iterable[DataColumn],
    asked: Asked,
    models: dict[tuple[str, str], tuple[str, dict[str, str]]],
) -> Review:
    """Each column of a copied table, decided or not. ``models``: {(schema,
    table): (model label, {column: field name})} for the tables models have."""
    undecided, by_default, decided = [], [], {}
    by_pgclone: set[str] = set()
    for column in columns:
        table = (column.schema, column.table)
        label, fields = models.get(table, (None, {}))
        named = Named(column, label, fields.get(column.name))
        where = f"{column.schema}.{column.table}"
        if table in asked.left_out:
            decided[where] = "left out"
        elif not needs_decision(column):
            by_default.append(named)
        elif (*table, column.name) in asked.ruled:
            decided[f"{where}.{column.name}"] = asked.ruled[(*table, column.name)]
        elif table in asked.kept:
            decided[f"{where}.{column.name}"] = "keep (table)"
        elif column.table in KEPT_BY_PGCLONE:
            by_pgclone.add(where)
            decided[f"{where}.{column.name}"] = "keep (pgclone)"
        else:
            undecided.append(named)
    return Review(tuple(undecided), tuple(by_default), tuple(sorted(by_pgclone)), decided)


def rule_text(spec: object) -> str:
    """A rule as the config writes it, as the digest records it."""
    return json.dumps(spec, sort_keys=True)


def skeleton(
    undecided: Iterable[Named],
    scrub_section: dict,
    tables_section: dict,
    suggestions: dict[str, str],
) -> str:
    """The config's ``scrub`` and ``tables`` sections with a decision for each of
    ``undecided`` added (``suggestions`` {name: rule}, else ``keep``), as
    Python text to paste over them and review."""
    scrub = {label: dict(fields) for label, fields in scrub_section.items()}
    tables = {
        label: spec if spec == decisions.KEEP else dict(spec)
        for label, spec in tables_section.items()
    }
    added: dict[tuple[str, str], str] = {}
    for named in undecided:
        column = named.column
        rule = "keep" if column.key else suggestions.get(named.name, "keep")
        why = column.type_name + ("; a key: copied as it is" if column.key else "")
        if named.model and named.field:
            scrub.setdefault(named.model, {})[named.field] = rule
            added[(named.model, named.field)] = why
        else:
            label = f"{column.schema}.{column.table}"
            tables.setdefault(label, {})[column.name] = rule
            added[(label, column.name)] = why
    lines = [
        "# Paste over the config's 'scrub' and 'tables' sections, and review each line",
        "# marked 'new': 'keep' copies the values as they are.",
    ]
    for section, content in (("scrub", scrub), ("tables", tables)):
        if content:
            lines += [f'"{section}": {{', *_entries(content, added), "},"]
    return "\n".join(lines)


def _entries(content: dict, added: dict[tuple[str, str], str]) -> list[str]:
    lines = []
    for label, fields in content.items():
        if not isinstance(fields, dict):
            lines.append(f"    {json.dumps(label)}: {json.dumps(fields)},")
            continue
        lines.append(f"    {json.dumps(label)}: {{")
        for name, rule in fields.items():
            note = f"  # new: {added[(label, name)]}" if (label, name) in added else ""
            lines.append(f"        {json.dumps(name)}: {json.dumps(rule)},{note}")
        lines.append("    },")
    return lines
