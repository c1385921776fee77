"""The ``references`` and ``null_keys`` of a dump config: what a subset follows
besides the database's foreign keys, and the foreign keys it cuts.

``references`` lists references the database has no constraint for, each
``{"from": …, "to": …}``:

- ``"from": "app.Model.field"``, or ``"from_table": "schema.table.column"``: the
  column holding the reference; ``->key`` after it (``"app.Model.payload->order"``,
  ``->a->b`` for a nested key) reads it from a key of a JSON column;
- ``"to": "app.Model"`` (its primary key) or ``"app.Model.field"``, or
  ``"to_table": "schema.table"`` (its one-column primary key) or
  ``"schema.table.column"``: what it references.

``null_keys`` lists foreign keys (``"app.Model.field"``, or ``{"table":
"schema.table.column"}``) a subset does not follow: the row they reference is
not pulled, and the column is written NULL where that row is left out.

Parsed here without a database, and checked against the models (so that
mistakes show at startup, pgclone.E003); tables, columns and their types are
checked when a dump reads the catalog (:mod:`pgclone.sharing.relations`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection

from pgclone.exceptions import ConfigurationError
from pgclone.sharing import sections

_NAME = r"[A-Za-z_][A-Za-z0-9_$]*"
_TABLE = re.compile(rf"({_NAME})\.({_NAME})(?:\.({_NAME}))?")
_FIELD = re.compile(r"([^.\s>-]+\.[^.\s>-]+)(?:\.([^.\s>-]+))?")
INTEGERS = ("smallint", "integer", "bigint")
TEXTS = ("text", "character varying", "character", "citext", "name")


@dataclass(frozen=True)
class End:
    """One end of a declared reference: a model's field or a table's column
    (``column`` None: the primary key), with the JSON keys it is read at."""

    written: str  # as the config writes it, for messages
    model: str | None = None  # a model's label; else schema and table name it
    schema: str | None = None
    table: str | None = None
    column: str | None = None  # a column's name (a model field's column)
    path: tuple[str, ...] = ()


@dataclass(frozen=True)
class Declared:
    source: End
    target: End


def parse(value: Any, nulls: Any, where: str, subset: bool) -> tuple[tuple, tuple]:
    """(declared references, null keys) of a config's ``references`` and
    ``null_keys`` (None or absent: none)."""
    if (value or nulls) and not subset:
        raise ConfigurationError(
            f"{where}: 'references' and 'null_keys' say how a subset follows references; "
            "this config has no 'subset': add one, or remove them."
        )
    declared = tuple(_reference(item, f"{where}['references'][{i}]") for i, item in _items(
        value, f"{where}['references']", "{'from': …, 'to': …} references"
    ))  # fmt: skip
    null_keys = tuple(_null_key(item, f"{where}['null_keys'][{i}]") for i, item in _items(
        nulls, f"{where}['null_keys']", "foreign keys ('app.Model.field' or {'table': …})"
    ))  # fmt: skip
    return declared, null_keys


def _items(value: Any, where: str, what: str) -> list[tuple[int, Any]]:
    if value is None:
        return []
    if isinstance(value, str | bytes | dict) or not isinstance(value, list | tuple):
        raise ConfigurationError(f"{where} must be a list of {what}.")
    return list(enumerate(value))


def _reference(item: Any, where: str) -> Declared:
    sources = {"from", "from_table"} & set(item) if isinstance(item, dict) else set()
    targets = {"to", "to_table"} & set(item) if isinstance(item, dict) else set()
    if not isinstance(item, dict) or len(sources) != 1 or len(targets) != 1 or len(item) != 2:
        raise ConfigurationError(
            f"{where} must be {{'from': 'app.Model.field' or 'from_table': "
            "'schema.table.column', 'to': 'app.Model' or 'to_table': 'schema.table'}, "
            f"one of each; got {item!r}."
        )
    (source_key,), (target_key,) = sources, targets
    source = _end(item[source_key], f"{where}[{source_key!r}]", source_key == "from_table", True)
    target = _end(item[target_key], f"{where}[{target_key!r}]", target_key == "to_table", False)
    if source.model and target.model:
        _check_types(source, target, where)
    return Declared(source, target)


def _end(value: Any, where: str, table: bool, source: bool) -> End:
    """An end as written: ``app.Model[.field]`` (a field for a source) or
    ``schema.table[.column]``, a source's with ``->key``s."""
    name, *path = value.split("->") if isinstance(value, str) else (None,)
    if path and (not source or not all(key.strip() for key in path)):
        raise ConfigurationError(
            f"{where}: '->key' reads a reference from a JSON key of its source, "
            "as 'app.Model.field->key'."
        )
    match = (_TABLE if table else _FIELD).fullmatch(name.strip()) if name else None
    if match is None or (source and match.groups()[-1] is None):
        shape = "schema.table.column" if table else "app.Model.field"
        raise ConfigurationError(
            f"{where} must name {'a column' if source else 'a table or a column'} as "
            f"'{shape}'{'' if source else ' (or without the column: the primary key)'}; "
            f"got {value!r}."
        )
    path = tuple(key.strip() for key in path)
    if table:
        schema, name, column = match.groups()
        return End(value, schema=schema, table=name, column=column, path=path)
    label, field_name = match.groups()
    model = sections.model_of(label, where)
    if field_name is None:
        return End(value, model=model._meta.label)
    field = sections.column_field(model, field_name, where, kept=True)
    if path and field.get_internal_type() != "JSONField":
        raise ConfigurationError(
            f"{where}: {model._meta.label}.{field.name} is no JSON field: '->key' reads "
            "a key of a JSONField."
        )
    return End(value, model=model._meta.label, column=field.column, path=path)


def _check_types(source: End, target: End, where: str) -> None:
    """What the models say of both ends' types: they must compare."""
    from django.apps import apps

    def column_type(end: End) -> str:
        meta = apps.get_model(end.model)._meta
        field = next((f for f in meta.concrete_fields if f.column == end.column), meta.pk)
        if field.is_relation:  # a foreign key holds what it references
            field = field.target_field
        return (field.db_type(connection) or "").split("(")[0].strip().lower()

    aliases = {"varchar": "character varying", "char": "character", "serial": "integer",
               "bigserial": "bigint", "smallserial": "smallint"}  # fmt: skip
    types = [aliases.get(t, t) for t in (column_type(source), column_type(target))]
    if source.path:
        types[0] = "text"  # a JSON key's value, read as text
    if comparison(*types) is None:
        raise ConfigurationError(f"{where}: {source.written} and {target.written} {MISMATCH}.")


MISMATCH = (
    "are of types that don't compare: a reference needs the type of what it references "
    "(integers of any size, or text of any kind), or text on one side (compared as text)"
)


def comparison(source: str, target: str) -> str | None:
    """How a reference compares values of types ``source`` and ``target``
    (PostgreSQL's names): "direct" (one type, integers, texts), "text" (one
    side is text: as Django writes a key into a text column), or None."""
    if source == target or {source, target} <= set(INTEGERS) or {source, target} <= set(TEXTS):
        return "direct"
    if source in TEXTS or target in TEXTS:
        return "text"
    return None


def _null_key(item: Any, where: str) -> End:
    written = item.get("table") if isinstance(item, dict) else item
    if isinstance(written, str) and "->" in written:
        raise ConfigurationError(f"{where}: a foreign key is a column, not a JSON key.")
    if isinstance(item, dict) and set(item) == {"table"}:
        end = _end(item["table"], f"{where}['table']", True, True)
    elif isinstance(item, str):
        end = _end(item, where, False, True)
        field = sections.column_field(
            sections.model_of(end.model, where), item.rsplit(".", 1)[-1], where, kept=True
        )
        if not (field.many_to_one and field.concrete):
            raise ConfigurationError(
                f"{where}: {item} is no foreign key; 'null_keys' names foreign keys."
            )
        if not field.null:
            raise ConfigurationError(
                f"{where}: {item} is NOT NULL (null=False), so it can't be written NULL: "
                "remove it from 'null_keys', or let the field be null."
            )
    else:
        raise ConfigurationError(
            f"{where} must be 'app.Model.field' or {{'table': 'schema.table.column'}}; "
            f"got {item!r}."
        )
    return end


def digest(plan_digest: str, declared: tuple, null_keys: tuple) -> str:
    """A plan's digest with its references and null keys in it (as it was without)."""
    if not declared and not null_keys:
        return plan_digest
    described = {
        "plan": plan_digest,
        "references": sorted(json.dumps(asdict(ref), sort_keys=True) for ref in declared),
        "null_keys": sorted(json.dumps(asdict(end), sort_keys=True) for end in null_keys),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
