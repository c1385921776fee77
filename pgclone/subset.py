"""The plan of a scrubbed and/or subset dump: per table, the SELECT of its rows.

Which rows a subset keeps (every table is one of these):

- *roots* (the config's ``subset``): a share of their rows (``percent``: the
  rows with the lowest hashes of their primary key, so the same ones each
  time) or the rows a ``where`` condition matches;
- *down* tables, which reference a root (transitively) through NOT NULL
  foreign keys: the rows whose every such reference is kept (order items of
  kept orders; both sides of a many-to-many through table);
- *up* tables, referenced by roots, down or up tables: the rows that kept
  rows reference (the customers of kept orders, their products);
- *filtered* tables, which reference up or filtered tables: the rows whose
  every non-NULL reference into those is kept (a customer's addresses);
- every other table (not connected to a root): all of its rows.

Besides, a kept row of a root, down or up table always brings the rows it
references, whatever their table's kind (a customer's ``last_order``), so
every foreign key holds among the kept rows. Kept rows are materialised as
``ctid``s in TEMP tables and grown by INSERT … SELECT statements repeated until
none adds a row (cycles included); this module only renders the SQL, and
:mod:`pgclone.plans` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgclone import catalog, configs, scrub, sharing
from pgclone.driver import sql
from pgclone.exceptions import ConfigurationError

KINDS = ("root", "down", "up", "filtered")


@dataclass(frozen=True)
class PlannedTable:
    oid: int
    schema: str
    name: str
    columns: tuple[str, ...]
    select: sql.Composable  # the rows to dump, scrubbed, under the names of ``columns``
    kind: str  # one of KINDS, or "whole"
    scrubbed: tuple[str, ...] = ()

    @property
    def transformed(self) -> bool:
        """Whether its data differs from what pg_dump would write (else pg_dump can)."""
        return self.kind != "whole" or bool(self.scrubbed)

    def copy_statement(self) -> sql.Composable:
        return sql.SQL("COPY ({}) TO STDOUT").format(self.select)


@dataclass(frozen=True)
class Root:
    model: str
    table: str  # as messages name it
    seed: sql.Composable  # the INSERT of its sample into its keep table
    params: tuple[Any, ...]
    rows: sql.Composable  # SELECT of the rows its sample is taken from (for checks)


@dataclass(frozen=True)
class Step:
    """One statement of the fixed point: adds to ``output``'s kept rows from ``inputs``'."""

    statement: sql.Composable
    inputs: tuple[int, ...]
    output: int


@dataclass(frozen=True)
class Plan:
    tables: tuple[PlannedTable, ...]
    roots: tuple[Root, ...]
    setup: tuple[sql.Composable, ...]  # the TEMP tables of kept rows
    steps: tuple[Step, ...]  # repeated until none adds a row
    # (table, column, FROM, expression, column) of the sql rules, checked before a dump
    outputs: tuple[tuple[str, str, sql.Composable, sql.Composable, scrub.Column], ...]
    digest: str  # of the rules and the subset (pgclone.sharing.digest)


def make_plan(cursor: Any, config: configs.DumpConfig, exclude: list[Any] = ()) -> Plan:
    """The plan of ``config`` for the database of ``cursor`` (whose catalog is read).

    ``exclude`` names the tables whose rows the dump leaves out (Django's
    ``db_table`` names or (schema, table) pairs): they are no part of the plan.
    Raises ConfigurationError for what the database contradicts in the config.
    """
    found = catalog.read(cursor)
    excluded = set(catalog.resolve(cursor, list(exclude)).values())
    tables = {oid: t for oid, t in found.tables.items() if oid not in excluded}
    fks = [fk for fk in found.foreign_keys if excluded.isdisjoint((fk.child, fk.parent))]
    models = [r.model for r in config.subset] + [r.model for r in config.scrub or ()]
    oids = _model_tables(cursor, models, excluded)
    roots = {oids[root.model]: root for root in config.subset}
    for oid, root in roots.items():
        if oid in excluded:
            raise ConfigurationError(
                f"The subset root {root.model} is left out of the dump (exclude_models, or it "
                "references a model that is): remove one of the two."
            )
    kinds = classify(fks, set(roots))
    rules = _table_rules(found, config.scrub or (), oids, excluded)
    planned = [
        _planned(table, kinds.get(oid, "whole"), rules.get(oid, {}))
        for oid, table in tables.items()
    ]
    setup = tuple(
        sql.SQL("CREATE TEMP TABLE {} (row_id tid PRIMARY KEY) ON COMMIT DROP").format(
            sql.Identifier(f"pgclone_keep_{oid}")
        )
        for oid in kinds
    )
    return Plan(
        tables=tuple(table for table, _ in planned),
        roots=tuple(_root(tables[oid], root) for oid, root in roots.items()),
        setup=setup,
        steps=tuple(_steps(tables, fks, kinds)),
        outputs=tuple(output for _, outputs in planned for output in outputs),
        digest=sharing.digest(config.scrub or (), config.subset),
    )


def _planned(table: catalog.Table, kind: str, rules: dict) -> tuple[PlannedTable, list]:
    """The table's SELECT, and what its sql rules need checked."""
    values, outputs = [], []
    name = sql.Identifier(table.schema, table.name)
    for column in table.columns:
        ref = sql.SQL("t.{}").format(sql.Identifier(column.name))
        if column.name in rules:
            expression = scrub.render(rules[column.name], ref, column)
            if any(rule.name == "sql" for rule in rules[column.name]):
                outputs.append((table.label, column.name, name, expression, column))
            ref = sql.SQL("{} AS {}").format(expression, sql.Identifier(column.name))
        values.append(ref)
    select = sql.SQL("SELECT {} FROM {} AS t").format(sql.SQL(", ").join(values), name)
    if kind != "whole":
        select = sql.SQL("{} WHERE t.ctid IN (SELECT row_id FROM {})").format(
            select, keep_table(table.oid)
        )
    names = tuple(column.name for column in table.columns)
    planned = PlannedTable(table.oid, table.schema, table.name, names, select, kind, tuple(rules))
    return planned, outputs


def classify(fks: list[catalog.ForeignKey], roots: set[int]) -> dict[int, str]:
    """Each table connected to a root, with its kind (see the module's docstring)."""
    down = _closure(roots, [fk for fk in fks if not fk.nullable], upward=False)
    up = _closure(down, fks, upward=True) - down
    filtered = _closure(down | up, fks, upward=False) - down - up
    kinds = {oid: "filtered" for oid in filtered}
    kinds.update({oid: "up" for oid in up})
    kinds.update({oid: "down" for oid in down})
    kinds.update({oid: "root" for oid in roots})
    return kinds


def _closure(start: set[int], fks: list[catalog.ForeignKey], *, upward: bool) -> set[int]:
    found = set(start)
    changed = True
    while changed:
        changed = False
        for fk in fks:
            source, target = (fk.child, fk.parent) if upward else (fk.parent, fk.child)
            if source in found and target not in found:
                found.add(target)
                changed = True
    return found


def _steps(tables: dict, fks: list[catalog.ForeignKey], kinds: dict[int, str]) -> list[Step]:
    steps = []
    for oid, kind in kinds.items():
        into = {"down": ("root", "down"), "filtered": KINDS}.get(kind, ())
        filters = [
            fk
            for fk in fks
            if fk.child == oid
            and kinds.get(fk.parent) in into
            and (kind == "filtered" or not fk.nullable)  # down: a nullable one pulls instead
        ]
        if filters:  # rows whose every reference into those tables is kept
            statement = sql.SQL(
                "INSERT INTO {} (row_id) SELECT t.ctid FROM {} AS t WHERE {} {}"
            ).format(
                keep_table(oid),
                _table(tables[oid]),
                sql.SQL(" AND ").join(_references_kept(tables, fk) for fk in filters),
                sql.SQL("ON CONFLICT DO NOTHING"),
            )
            steps.append(Step(statement, tuple(fk.parent for fk in filters), oid))
    for fk in fks:  # rows referenced by kept rows
        if kinds.get(fk.child) in ("root", "down", "up"):
            statement = sql.SQL(
                "INSERT INTO {keep} (row_id) SELECT p.ctid FROM {parent} AS p WHERE EXISTS "
                "(SELECT 1 FROM {child} AS c JOIN {kept} AS k ON k.row_id = c.ctid "
                "WHERE {match}) ON CONFLICT DO NOTHING"
            ).format(
                keep=keep_table(fk.parent),
                parent=_table(tables[fk.parent]),
                match=_match("c", fk.child_columns, "p", fk.parent_columns),
                child=_table(tables[fk.child]),
                kept=keep_table(fk.child),
            )
            steps.append(Step(statement, (fk.child,), fk.parent))
    return steps


def _references_kept(tables: dict, fk: catalog.ForeignKey) -> sql.Composable:
    nulls = [sql.SQL("t.{} IS NULL").format(sql.Identifier(c)) for c in fk.child_columns]
    kept = sql.SQL(
        "EXISTS (SELECT 1 FROM {} AS p JOIN {} AS k ON k.row_id = p.ctid WHERE {})"
    ).format(
        _table(tables[fk.parent]),
        keep_table(fk.parent),
        _match("t", fk.child_columns, "p", fk.parent_columns),
    )
    return sql.SQL("({})").format(sql.SQL(" OR ").join([*nulls, kept]))


def _match(child: str, child_columns: tuple, parent: str, parent_columns: tuple) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(child), sql.Identifier(a), sql.Identifier(parent), sql.Identifier(b)
        )
        for a, b in zip(child_columns, parent_columns, strict=True)
    )


def _root(table: catalog.Table, root: sharing.SubsetRoot) -> Root:
    name = _table(table)
    if root.where is not None:
        rows = sql.SQL("SELECT ctid FROM {} WHERE ({})").format(name, sql.SQL(root.where))
        seed = sql.SQL("INSERT INTO {} (row_id) {} ON CONFLICT DO NOTHING").format(
            keep_table(table.oid), rows
        )
        return Root(root.model, table.label, seed, (), rows)
    identity = sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in table.primary_key)
    )
    identity = identity if table.primary_key else sql.SQL("t::text")
    seed = sql.SQL(
        "INSERT INTO {keep} (row_id) SELECT t.ctid FROM {name} AS t "
        "ORDER BY hashtextextended({identity}, 0), t.ctid "
        "LIMIT (SELECT ceil(count(*) * %s::numeric / 100)::bigint FROM {name}) "
        "ON CONFLICT DO NOTHING"
    ).format(keep=keep_table(table.oid), name=name, identity=identity)
    rows = sql.SQL("SELECT ctid FROM {}").format(name)
    return Root(root.model, table.label, seed, (root.percent,), rows)


def _table(table: catalog.Table) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


def keep_table(oid: int) -> sql.Composable:
    """The TEMP table of the kept rows (their ctid) of the table ``oid``."""
    return sql.SQL("pg_temp.{}").format(sql.Identifier(f"pgclone_keep_{oid}"))


def _model_tables(cursor: Any, labels: list[str], excluded: set[int]) -> dict[str, int]:
    from django.apps import apps

    tables = {label: apps.get_model(label)._meta.db_table for label in labels}
    oids = catalog.resolve(cursor, list(set(tables.values())))
    for label, table in tables.items():
        if table not in oids:
            raise ConfigurationError(
                f"The table {table!r} of {label} is not in the database: run migrate first."
            )
    return {label: oids[table] for label, table in tables.items()}


def _table_rules(found: catalog.Catalog, scrubbed: tuple, oids: dict, excluded: set) -> dict:
    """{table oid: {column: rules}}, each rule checked against the real column."""
    rules: dict[int, dict[str, tuple]] = {}
    for field in scrubbed:
        oid = oids[field.model]
        if oid in excluded:
            continue  # its rows are left out
        table = found.tables[oid]
        column = table.column(field.column)
        where = f"The scrub rule of {field.model}.{field.field} ({table.label}.{field.column})"
        if column is None:
            raise ConfigurationError(f"{where}: no such column in the database: run migrate.")
        if field.column in found.key_columns(oid):
            raise ConfigurationError(f"{where}: the column is part of a key; it can't be scrubbed.")
        problem = scrub.problem(field.rules, column)
        if problem:
            raise ConfigurationError(f"{where}: {problem}.")
        rules.setdefault(oid, {})[field.column] = field.rules
    return rules
