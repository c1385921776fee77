"""The ``scrub`` and ``subset`` sections of a dump config, parsed and checked
against the installed models (so that mistakes show at startup, pgclone.E003).

``scrub`` maps model labels to {field name: rule} (the rules: pgclone.sharing.scrub);
``subset`` maps the root models to ``{"percent": P}`` or ``{"where": SQL}``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from django.apps import apps
from django.db import connection, models

from pgclone.exceptions import ConfigurationError
from pgclone.sharing import decisions as named_tables
from pgclone.sharing import scrub

KEEP = (scrub.Rule("keep"),)


@dataclass(frozen=True)
class FieldRules:
    model: str  # the model's label
    field: str
    column: str
    rules: tuple[scrub.Rule, ...]


@dataclass(frozen=True)
class SubsetRoot:
    model: str
    percent: float | None = None
    where: str | None = None


@dataclass(frozen=True)
class Sharing:
    """What a dump config asks of the data it copies: its scrub rules (None
    without a ``scrub`` section) and its subset roots. A dump with either is
    *planned*: pgclone writes the tables the plan names."""

    scrub: tuple[FieldRules, ...] | None = None
    subset: tuple[SubsetRoot, ...] = ()
    # what the subset follows besides foreign keys, and the keys it cuts
    # (pgclone.sharing.references: Declared and End)
    references: tuple = ()
    null_keys: tuple = ()
    # its 'tables' and 'exclude_tables' (pgclone.sharing.decisions)
    decisions: named_tables.Decisions = field(default_factory=named_tables.Decisions)

    @property
    def planned(self) -> bool:
        return self.scrub is not None or bool(self.subset)

    def what_it_does(self) -> list[str]:
        """The words ``ls --long`` and the manifest use for what is done to the data."""
        done = (("scrubbed", self.scrub is not None), ("subset", bool(self.subset)))
        return [word for word, on in done if on]


def model_of(label: Any, where: str) -> type[models.Model]:
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigurationError(
            f"{where}: unknown model {label!r}; use the 'app_label.ModelName' form of an "
            "installed model, such as 'auth.User'."
        ) from exc
    return model._meta.concrete_model


def _mapping(value: Any, where: str, what: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a dict of {what}.")
    return value


def parse_scrub(value: Any, where: str) -> tuple[FieldRules, ...] | None:
    """The rules of a 'scrub' section; None without one (``{}`` is one: a dump with it
    is refused until every column is decided, pgclone.sharing.review)."""
    if value is None:
        return None
    found = []
    for label, fields in _mapping(value, where, "model labels to {field: rule}").items():
        model = model_of(label, where)
        at = f"{where}[{label!r}]"
        for name, spec in _mapping(fields, at, "field names to rules").items():
            rules = scrub.parse(spec, f"{at}[{name!r}]")
            field = column_field(model, name, at, kept=rules == KEEP)
            problem = scrub.problem(rules, column_of(field))
            if problem:
                raise ConfigurationError(f"{at}[{name!r}]: {problem}.")
            found.append(FieldRules(model._meta.label, field.name, field.column, rules))
    return tuple(found)


def column_field(
    model: type[models.Model], name: Any, where: str, kept: bool = False
) -> models.Field:
    """The concrete field ``name`` of ``model``; unless ``kept``, not a key."""
    try:
        field = model._meta.get_field(name)
    except Exception as exc:  # FieldDoesNotExist, or a name that is no string
        names = ", ".join(f.name for f in model._meta.concrete_fields)
        raise ConfigurationError(
            f"{where}: {model._meta.label} has no field {name!r}; its fields are {names}."
        ) from exc
    if not getattr(field, "concrete", False) or field.column is None:
        raise ConfigurationError(f"{where}: {name!r} is not a column of {model._meta.label}.")
    if (field.primary_key or field.is_relation) and not kept:
        raise ConfigurationError(
            f"{where}: {name!r} is a key (primary or foreign) of {model._meta.label}; "
            "rows are matched on keys, so they can't be scrubbed."
        )
    return field


def column_of(field: models.Field) -> scrub.Column:
    """A Django field as a scrub rule sees its column."""
    db_type = (field.db_type(connection) or "").lower()
    kind = "other"
    if db_type.startswith(("varchar", "char", "text", "citext")):
        kind = "text"
    elif db_type in ("inet", "uuid"):
        kind = db_type
    elif db_type in ("jsonb",):
        kind = "json"
    meta = field.model._meta
    unique_sets = [*meta.unique_together, *(
        c.fields for c in meta.constraints if isinstance(c, models.UniqueConstraint)
    )]  # fmt: skip
    return scrub.Column(
        name=f"{meta.label}.{field.name}",
        kind=kind,
        type_name=db_type or field.get_internal_type(),
        max_length=field.max_length if db_type.startswith(("varchar", "char")) else None,
        nullable=field.null,
        unique=field.unique or any(field.name in names for names in unique_sets),
    )


def parse_subset(value: Any, where: str) -> tuple[SubsetRoot, ...]:
    found = []
    for label, spec in _mapping(value, where, "root model labels to {percent|where}").items():
        model = model_of(label, where)
        at = f"{where}[{label!r}]"
        if not isinstance(spec, dict) or set(spec) not in ({"percent"}, {"where"}):
            raise ConfigurationError(
                f"{at} must be {{'percent': P}} (0 < P <= 100) or {{'where': 'SQL condition'}}, "
                f"exactly one of them; got {spec!r}."
            )
        percent, condition = spec.get("percent"), spec.get("where")
        if "percent" in spec and (
            not isinstance(percent, int | float) or isinstance(percent, bool)
            or not 0 < percent <= 100
        ):  # fmt: skip
            raise ConfigurationError(f"{at}['percent'] must be a number above 0, at most 100.")
        if "where" in spec and (
            not isinstance(condition, str) or not condition.strip() or ";" in condition
        ):
            raise ConfigurationError(
                f"{at}['where'] must be one SQL condition on the table's columns (no ';')."
            )
        found.append(SubsetRoot(model._meta.label, percent, condition))
    return tuple(found)


def digest(
    scrubbed: tuple[FieldRules, ...],
    subset: tuple[SubsetRoot, ...],
    named: list[FieldRules] = (),
) -> str:
    """A stable fingerprint of what a config does to the data (not of the key);
    ``named``: the rules of its ``tables`` (pgclone.sharing.decisions)."""
    described = {
        "version": scrub.RULES_VERSION,
        "scrub": sorted((asdict(rules) for rules in scrubbed), key=json.dumps),
        "subset": sorted((asdict(root) for root in subset), key=json.dumps),
    }
    if named:  # absent otherwise: a config without 'tables' keeps its digest
        described["tables"] = sorted((asdict(rules) for rules in named), key=json.dumps)
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
