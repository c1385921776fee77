"""What a dump config decides for every column of the database, read from its catalog.

A config with ``scrub`` must decide every column that can hold personal or
secret data in every table the dump copies (:mod:`pgclone.sharing.deciding`
says which): ``scrub-check`` lists the undecided ones and a scrubbed dump
fails before it writes anything while there is one. Besides, a scrubbed
dump copies the tables that hold credentials empty
(:mod:`pgclone.sharing.credentials`) unless ``tables`` keeps one by name, and
gives the user model's ``password`` the rule ``unusable_password`` unless the
config decides it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist

from pgclone.exceptions import ConfigurationError
from pgclone.pg import catalog, driver, search_path
from pgclone.sharing import credentials, deciding, personal, scrub, sections

UNUSABLE = (scrub.Rule("unusable_password"),)


@dataclass(frozen=True)
class Decided:
    """A config's decisions on the database: the columns left undecided, and the
    sharing a dump applies (with the implicit rules added)."""

    review: deciding.Review
    sharing: sections.Sharing
    models: dict[tuple[str, str], tuple[str, dict[str, str]]]

    @property
    def undecided(self) -> tuple[deciding.Named, ...]:
        return self.review.undecided


def emptied(cursor: driver.Cursor, asked: sections.Sharing) -> list[tuple[str, str]]:
    """(schema, table) of the tables holding credentials that a dump of ``asked``
    copies empty: all those found, for a config with ``scrub``, but those its
    ``tables`` keeps. Raises ConfigurationError for a kept one whose primary key
    is its secret."""
    if asked.scrub is None:
        return []
    known = credentials.table_names()
    cursor.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(%s) ORDER BY 1, 2",
        [sorted(known)],
    )
    found = []
    for schema, name in cursor.fetchall():
        if asked.decisions.named(schema, name) is None:
            found.append((schema, name))
        elif known[name].secret_key:
            raise ConfigurationError(
                f"{schema}.{name} holds {known[name].what}, and its primary key is the secret "
                "itself (keys are copied as they are): it can't be kept in a scrubbed dump. "
                "Remove it from 'tables': the dump copies it empty."
            )
    return found


def decide(
    cursor: driver.Cursor,
    asked: sections.Sharing,
    *,
    path: list[str],
    left_out: list[tuple[str, str]],
) -> Decided:
    """``asked``'s decisions on the database of ``cursor`` (its models' tables
    found in the schemas of ``path``), the tables of ``left_out`` not copied.
    Raises ConfigurationError for a table or column of ``tables`` that isn't
    there, or a column decided twice."""
    columns = catalog.data_columns(cursor)
    models = _model_tables(cursor, path)
    labels = {label: table for table, (label, _) in models.items()}
    ruled: dict[tuple[str, str, str], str] = {}
    for rules in asked.scrub or ():
        if rules.model in labels:
            ruled[(*labels[rules.model], rules.column)] = _text(rules.rules)
    implicit = _password(asked, labels, ruled)
    if implicit is not None:
        ruled[(*labels[implicit.model], implicit.column)] = _text(implicit.rules)
    existing = {(c.schema, c.table, c.name) for c in columns}
    for table in asked.decisions.tables:
        if not any(c[:2] == (table.schema, table.name) for c in existing):
            raise ConfigurationError(
                f"'tables' names {table.label}, which is no table of the database (or one "
                "pg_dump copies no rows of): check its schema and name."
            )
        for column, rules in table.columns:
            key = (table.schema, table.name, column)
            if key not in existing:
                raise ConfigurationError(f"'tables': {table.label} has no column {column!r}.")
            if key in ruled:
                raise ConfigurationError(
                    f"{table.label}.{column} has a rule in both 'scrub' and 'tables': keep one."
                )
            ruled[key] = _text(rules)
    said = deciding.Asked(
        ruled=ruled,
        kept=frozenset((t.schema, t.name) for t in asked.decisions.tables if t.whole),
        left_out=frozenset(left_out),
    )
    scrubbed = asked.scrub if implicit is None else (*(asked.scrub or ()), implicit)
    return Decided(
        deciding.review(columns, said, models),
        dataclasses.replace(asked, scrub=scrubbed),
        models,
    )


def _text(rules: tuple[scrub.Rule, ...]) -> str:
    return deciding.rule_text([dataclasses.asdict(rule) for rule in rules])


def _password(
    asked: sections.Sharing, labels: dict[str, tuple[str, str]], ruled: dict
) -> sections.FieldRules | None:
    """The user model's password made unusable, where the config says nothing of it."""
    if asked.scrub is None:
        return None
    try:
        model = apps.get_model(settings.AUTH_USER_MODEL)._meta.concrete_model
        field = model._meta.get_field("password")
    except (LookupError, ValueError, FieldDoesNotExist):  # no auth app, or no password
        return None
    label = model._meta.label
    if label not in labels or (*labels[label], field.column) in ruled:
        return None
    table = asked.decisions.named(*labels[label])
    if table is not None and (table.whole or field.column in table.rules()):
        return None
    return sections.FieldRules(label, field.name, field.column, UNUSABLE)


def _model_tables(
    cursor: driver.Cursor, path: list[str]
) -> dict[tuple[str, str], tuple[str, dict[str, str]]]:
    """{(schema, table): (model label, {column: field name})} of the installed
    models whose tables are in the schemas of ``path``."""
    by_table: dict[str, tuple[str, dict[str, str]]] = {}
    for model in apps.get_models(include_auto_created=True):
        meta = model._meta
        if meta.proxy or not meta.db_table or meta.db_table in by_table:
            continue
        fields = {f.column: f.name for f in meta.local_concrete_fields if f.column}
        by_table[meta.db_table] = (meta.label, fields)
    found = search_path.find(cursor, path, by_table)
    return {(schema, name): by_table[name] for name, (schema, _) in found.items()}


def suggestions(cursor: driver.Cursor, undecided: tuple[deciding.Named, ...]) -> dict[str, str]:
    """{name: rule} of the undecided columns whose name suggests a rule that fits
    them (:func:`pgclone.sharing.personal.guess`): for ``--skeleton``."""
    found = catalog.read(cursor)
    tables = {(t.schema, t.name): t for t in found.tables.values()}
    suggested = {}
    for named in undecided:
        rule = personal.guess(named.column.name)
        table = tables.get((named.column.schema, named.column.table))
        column = table.column(named.column.name) if table else None
        if rule is None or column is None or named.column.key:
            continue
        if scrub.problem(scrub.parse(rule, named.name), column) is None:
            suggested[named.name] = rule
    return suggested


def refusal(undecided: tuple[deciding.Named, ...], config: str) -> str:
    """The message of a scrubbed dump refused for its undecided columns."""
    listed = "\n".join(f"- {named}" for named in undecided)
    return (
        f"The dump config {config!r} scrubs, but decides nothing for these "
        f"{len(undecided)} column(s) that can hold personal or secret data:\n{listed}\n"
        "Give each a scrub rule ('keep' keeps it as it is), keep or leave out its table "
        "by name ('tables', 'exclude_tables'), or exclude its model. "
        f"`manage.py pgclone scrub-check --config {config} --skeleton` prints them as "
        "config text to review."
    )
