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
every foreign key holds among the kept rows. Kept rows are materialised in
TEMP tables, one per table: each row's ``ctid`` (how its rows are written) and
the values of its key columns (those foreign keys match on, so that a table's
rows are chosen by a hash or index lookup of the kept keys, never by fetching
the kept rows again). INSERT … SELECT statements grow them, repeated until none
adds a row (cycles included); this module only renders the SQL, and
:mod:`pgclone.sharing.plans` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgclone.exceptions import ConfigurationError
from pgclone.pg import catalog, driver
from pgclone.pg.driver import sql
from pgclone.sharing import graph, references, relations, scrub
from pgclone.sharing import sections as sharing


@dataclass(frozen=True)
class PlannedTable:
    oid: int
    schema: str
    name: str
    columns: tuple[str, ...]
    select: sql.Composable  # the rows to dump, scrubbed, under the names of ``columns``
    kind: str  # one of graph.KINDS, or "whole"
    scrubbed: tuple[str, ...] = ()
    leaf: bool = False  # its rows are chosen as they are written, not kept first
    reads: tuple[int, ...] = ()  # the tables whose kept rows ``select`` reads (by oid)
    keys: tuple[int, ...] = ()  # those of them whose kept keys it reads, not only row ids
    nulled: tuple[str, ...] = ()  # its cut keys, NULL where what they reference is left out
    # each scrubbed column's rules, and the condition on ``t`` of the rows kept (None: all)
    rules: tuple[tuple[str, tuple[scrub.Rule, ...]], ...] = ()
    rows: sql.Composable | None = None
    stored: bool = False  # a plain dump's: its rows as they are (``COPY table TO STDOUT``)

    @property
    def transformed(self) -> bool:
        """Whether its data differs from what pg_dump would write (else pg_dump can)."""
        return self.kind != "whole" or bool(self.scrubbed) or bool(self.nulled)

    def copy_statement(self) -> sql.Composable:
        if self.stored:  # cheaper than COPY (SELECT …): no projection of each row
            columns = sql.SQL(", ").join(map(sql.Identifier, self.columns))
            table = sql.Identifier(self.schema, self.name)
            return sql.SQL("COPY {} ({}) TO STDOUT").format(table, columns)
        return sql.SQL("COPY ({}) TO STDOUT").format(self.select)


def stored_table(oid: int, schema: str, name: str, columns: tuple[str, ...]) -> PlannedTable:
    """A table a plain dump copies as it is (its own rows, not its heirs')."""
    values = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns)
    select = sql.SQL("SELECT {} FROM {} AS t").format(values, only(schema, name))
    return PlannedTable(oid, schema, name, columns, select, "whole", stored=True)


@dataclass(frozen=True)
class Keep:
    """The TEMP table of a subset table's kept rows: ``row_id`` (the ctid) and
    the key columns (``columns[i]`` of the table as ``k{i}``)."""

    oid: int
    columns: tuple[relations.Key, ...]

    @property
    def table(self) -> sql.Composable:
        return keep_table(self.oid)

    def column(self, name: relations.Key) -> sql.Identifier:
        return sql.Identifier(f"k{self.columns.index(name)}")

    def values(self, alias: str | None) -> sql.Composable:
        """``ctid, <key columns>`` of the table's rows (under ``alias``, if any)."""

        refs = [relations.key_ref(alias, key) for key in ("ctid", *self.columns)]
        return sql.SQL(", ").join(refs)

    def create(self, table: sql.Composable) -> sql.Composable:
        names = sql.SQL(", ").join(
            [sql.Identifier("row_id"), *(self.column(c) for c in self.columns)]
        )
        return sql.SQL(
            "CREATE TEMP TABLE {keep} ({names}) ON COMMIT DROP AS "
            "SELECT {values} FROM {table} WITH NO DATA"
        ).format(keep=self.table, names=names, values=self.values(None), table=table)

    def insert(self, alias: str, table: sql.Composable, where: sql.Composable) -> sql.Composable:
        """INSERT of the rows of ``table`` (as ``alias``) that ``where`` keeps and that
        are not kept yet. No unique index: checking one for each row would cost
        as much as finding the rows, and a statement never finds a row twice."""
        return sql.SQL(
            "INSERT INTO {keep} SELECT {values} FROM {table} AS {alias} WHERE ({where}) "
            "AND NOT EXISTS (SELECT FROM {keep} AS d WHERE d.row_id = {alias}.ctid)"
        ).format(
            keep=self.table,
            values=self.values(alias),
            table=table,
            alias=sql.Identifier(alias),
            where=where,
        )


@dataclass(frozen=True)
class Root:
    model: str
    table: str  # as messages name it
    seed: sql.Composable  # the INSERT of its sample into its keep table
    params: tuple[Any, ...]
    rows: sql.Composable  # SELECT of the rows its sample is taken from (for checks)
    oid: int = 0


@dataclass(frozen=True)
class KeepStatement:
    """One statement of the fixed point: adds to ``output``'s kept rows from ``inputs``'."""

    statement: sql.Composable
    inputs: tuple[int, ...]
    output: int
    seed: sql.Composable | None = None  # a down or filtered table's: the WHERE of its rows


@dataclass(frozen=True)
class Plan:
    tables: tuple[PlannedTable, ...]
    roots: tuple[Root, ...]
    setup: tuple[tuple[int, sql.Composable], ...]  # the TEMP tables of kept rows, by table
    steps: tuple[KeepStatement, ...]  # in this order, repeated until none adds a row
    # (table, column, FROM, expression, column) of the sql rules, checked before a dump
    outputs: tuple[tuple[str, str, sql.Composable, sql.Composable, scrub.Column], ...]
    digest: str  # of the rules and the subset (pgclone.sharing.sections.digest)
    decisions: str = ""  # of the decisions on every column (pgclone.sharing.review)
    # a plain dump's: pgclone copies every table of ``tables`` as it is, and needs
    # no scrub key; a planned dump's copies those it transforms
    copies_all: bool = False


def plain_plan(tables: list[tuple[int, str, str, tuple[str, ...]]]) -> Plan:
    """The plan of a plain dump: ``tables`` (oid, schema, name, columns) copied as they are."""
    stored = tuple(stored_table(*table) for table in tables)
    return Plan(stored, roots=(), setup=(), steps=(), outputs=(), digest="", copies_all=True)


def make_plan(
    cursor: driver.Cursor, asked: sharing.Sharing, *, path: list[str], exclude: list[Any] = ()
) -> Plan:
    """The plan of ``asked`` (a dump config's scrub and subset) for the database
    of ``cursor`` (whose catalog is read).

    ``path``: the schemas where the project finds its models' tables
    (pgclone.pg.search_path.project_path). ``exclude`` names the tables whose rows
    the dump leaves out (Django's ``db_table`` names or (schema, table) pairs):
    they are no part of the plan. Raises ConfigurationError for what the
    database contradicts in the config.
    """
    found = catalog.read(cursor)
    excluded = set(catalog.resolve(cursor, list(exclude), path).values())
    tables = {oid: t for oid, t in found.tables.items() if oid not in excluded}
    fks = [fk for fk in found.foreign_keys if excluded.isdisjoint((fk.child, fk.parent))]
    fks, cut = relations.edges(cursor, asked, found, tables, fks, path, excluded)
    models = [r.model for r in asked.subset] + [r.model for r in asked.scrub or ()]
    oids = _model_tables(cursor, models, path)
    raw = _named_rules(cursor, asked, oids)  # the rules of 'tables', their oids added
    scrubbed = (*(asked.scrub or ()), *raw)
    for label, oid in oids.items():
        if oid not in found.tables and oid not in excluded:
            raise ConfigurationError(
                f"The table of {label} is partitioned (or not an ordinary table): scrub and "
                "subset rules don't cover partitioned tables yet."
            )
    roots = {oids[root.model]: root for root in asked.subset}
    for oid, root in roots.items():
        if oid in excluded:
            raise ConfigurationError(
                f"The subset root {root.model} is left out of the dump (exclude_models, or it "
                "references a model that is): remove one of the two."
            )
    kinds = _classify(fks, set(roots), tables)
    keeps = _keeps(kinds, fks, cut)
    steps = _steps(tables, fks, kinds, keeps)
    leaves = graph.leaves(steps, kinds, read={fk.parent for fk in cut})
    nulls = relations.nulled(cut, kinds, keeps)
    heirs = _heirs(cursor, [oids[field.model] for field in scrubbed])
    rules = _table_rules(found, scrubbed, oids, excluded, heirs)
    planned = [
        _planned(table, kinds.get(oid, "whole"), rules.get(oid, {}), leaves.get(oid), nulls)
        for oid, table in tables.items()
    ]
    setup = tuple(
        (oid, keep.create(_table(tables[oid]))) for oid, keep in keeps.items() if oid not in leaves
    )
    return Plan(
        tables=tuple(table for table, _ in planned),
        roots=tuple(_root(tables[oid], root, keeps[oid]) for oid, root in roots.items()),
        setup=setup,
        steps=graph.ordered([step for step in steps if step.output not in leaves]),
        outputs=tuple(output for _, outputs in planned for output in outputs),
        digest=references.digest(
            sharing.digest(asked.scrub or (), asked.subset, raw), asked.references, asked.null_keys
        ),
    )


def _classify(fks: list, roots: set[int], tables: dict) -> dict[int, str]:
    kinds = graph.classify(fks, roots)
    for fk in fks:
        if fk.into_partition and (fk.child in kinds or fk.parent in kinds):
            raise ConfigurationError(
                f"The subset reaches {tables[fk.child].label}, whose foreign key references a "
                "partitioned table: subsets don't follow such keys yet."
            )
    return kinds


def _planned(
    table: catalog.Table, kind: str, rules: dict, leaf: KeepStatement | None, nulls: dict
) -> tuple[PlannedTable, list]:
    """The table's SELECT (of the rows ``leaf`` keeps, for a leaf; with its cut
    keys NULL where they reference rows left out, ``nulls``), and what its sql
    rules need checked."""
    values, outputs, nulls = [], [], nulls.get(table.oid, {})
    name = _table(table)
    for column in table.columns:
        ref = sql.SQL("t.{}").format(sql.Identifier(column.name))
        if column.name in nulls:
            ref = sql.SQL("CASE WHEN {} THEN {} END AS {}").format(
                nulls[column.name][1], ref, sql.Identifier(column.name)
            )
        elif column.name in rules:
            expression = scrub.render(rules[column.name], ref, column)
            if any(rule.name == "sql" for rule in rules[column.name]):
                outputs.append((table.label, column.name, name, expression, column))
            ref = sql.SQL("{} AS {}").format(expression, sql.Identifier(column.name))
        values.append(ref)
    select = sql.SQL("SELECT {} FROM {} AS t").format(sql.SQL(", ").join(values), name)
    reads: tuple[int, ...] = ()
    keys = tuple(parent for parent, _ in nulls.values())
    where = None
    if leaf is not None:
        where, reads = leaf.seed, leaf.inputs
        keys += leaf.inputs
    elif kind != "whole":  # a TID scan of the kept rows, in the order of the heap
        where = sql.SQL("t.ctid = ANY(ARRAY(SELECT row_id FROM {}))").format(keep_table(table.oid))
        reads = (table.oid,)
    if where is not None:
        select = sql.SQL("{} WHERE {}").format(select, where)
    names = tuple(column.name for column in table.columns)
    planned = PlannedTable(
        table.oid, table.schema, table.name, names, select, kind, tuple(rules), leaf is not None,
        tuple(dict.fromkeys(reads + keys)), tuple(dict.fromkeys(keys)), tuple(nulls),
        tuple(rules.items()), where,
    )  # fmt: skip
    return planned, outputs


def _keeps(kinds: dict[int, str], fks: list, cut: list = ()) -> dict[int, Keep]:
    """The TEMP table of each subset table, with the columns its foreign keys
    match on: those that reference it (cut keys too: where they reference a row
    left out, they are written NULL), and those it pulls its parents by."""
    columns: dict[int, dict[relations.Key, None]] = {oid: {} for oid in kinds}
    for fk in [*fks, *cut]:
        if fk.parent in columns:
            columns[fk.parent].update(dict.fromkeys(fk.parent_columns))
    for fk in fks:
        if fk.child in columns:
            columns[fk.child].update(dict.fromkeys(fk.child_columns))
    return {oid: Keep(oid, tuple(names)) for oid, names in columns.items()}


def _steps(
    tables: dict, fks: list[catalog.ForeignKey], kinds: dict[int, str], keeps: dict[int, Keep]
) -> list[KeepStatement]:
    steps = []
    for oid in kinds:
        filters = graph.filters(fks, kinds, oid)
        if filters:  # rows whose every reference into those tables is kept
            where = sql.SQL(" AND ").join(_references_kept(fk, keeps[fk.parent]) for fk in filters)
            statement = keeps[oid].insert("t", _table(tables[oid]), where)
            steps.append(KeepStatement(statement, tuple(fk.parent for fk in filters), oid, where))
    for fk in graph.pulls(fks, kinds):  # rows referenced by kept rows
        child = keeps[fk.child]
        where = sql.SQL("{} IN (SELECT {} FROM {} AS k)").format(
            _row("p", fk.parent_columns),
            sql.SQL(", ").join(child.column(c) for c in fk.child_columns),
            child.table,
        )
        if isinstance(fk, relations.Reference):
            where = relations.referencing_kept(fk, child.table, child.column)
        statement = keeps[fk.parent].insert("p", _table(tables[fk.parent]), where)
        steps.append(KeepStatement(statement, (fk.child,), fk.parent))
    return steps


def _references_kept(fk: catalog.ForeignKey, parent: Keep) -> sql.Composable:
    """The condition on ``t`` that what ``fk`` references is kept: by the child's
    index where it has one on the key (a bitmap scan of the kept keys, which
    reads a tenth of a table in about half the time of hashing all of its
    keys), else by a hash of the kept keys."""
    if isinstance(fk, relations.Reference):
        return relations.referenced_kept(fk, parent.table, parent.column)
    keys = sql.SQL(", ").join(parent.column(c) for c in fk.parent_columns)
    if fk.lookup:
        kept = sql.SQL("{} = ANY(ARRAY(SELECT {} FROM {}))").format(
            _row("t", fk.child_columns), keys, parent.table
        )
    else:
        kept = sql.SQL("{} IN (SELECT {} FROM {} AS k)").format(
            _row("t", fk.child_columns), keys, parent.table
        )
    if not fk.nullable:
        return kept
    nulls = [sql.SQL("t.{} IS NULL").format(sql.Identifier(c)) for c in fk.child_columns]
    return sql.SQL("({})").format(sql.SQL(" OR ").join([*nulls, kept]))


def _row(alias: str, columns: tuple[str, ...]) -> sql.Composable:
    """``alias.a`` or ``(alias.a, alias.b)``: what IN compares with a keep table's columns."""
    refs = [sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c)) for c in columns]
    row = sql.SQL(", ").join(refs)
    return row if len(refs) == 1 else sql.SQL("({})").format(row)


def _root(table: catalog.Table, root: sharing.SubsetRoot, keep: Keep) -> Root:
    name = _table(table)
    if root.where is not None:  # unaliased: the condition may name the table
        rows = sql.SQL("SELECT ctid FROM {} WHERE ({})").format(name, sql.SQL(root.where))
        seed = sql.SQL("INSERT INTO {} SELECT {} FROM {} WHERE ({})").format(
            keep.table, keep.values(None), name, sql.SQL(root.where)
        )
        return Root(root.model, table.label, seed, (), rows, table.oid)
    identity = sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in table.primary_key)
    )
    identity = identity if table.primary_key else sql.SQL("t::text")
    seed = sql.SQL(
        "INSERT INTO {keep} SELECT {values} FROM {name} AS t "
        "ORDER BY hashtextextended({identity}, 0), t.ctid "
        "LIMIT (SELECT ceil(count(*) * %s::numeric / 100)::bigint FROM {name})"
    ).format(keep=keep.table, values=keep.values("t"), name=name, identity=identity)
    rows = sql.SQL("SELECT ctid FROM {}").format(name)
    return Root(root.model, table.label, seed, (root.percent,), rows, table.oid)


def _table(table: catalog.Table) -> sql.Composable:
    return only(table.schema, table.name)


def only(schema: str, name: str) -> sql.Composable:
    """The table's own rows, without those of tables inheriting from it (``INHERITS``:
    pg_dump writes those with their own table)."""
    return sql.SQL("ONLY {}").format(sql.Identifier(schema, name))


def keep_table(oid: int) -> sql.Composable:
    """The TEMP table of the kept rows (their ctid) of the table ``oid``."""
    return sql.SQL("pg_temp.{}").format(sql.Identifier(f"pgclone_keep_{oid}"))


def _model_tables(cursor: driver.Cursor, labels: list[str], path: list[str]) -> dict[str, int]:
    from django.apps import apps

    tables = {label: apps.get_model(label)._meta.db_table for label in labels}
    oids = catalog.resolve(cursor, list(set(tables.values())), path)
    for label, table in tables.items():
        if table not in oids:
            raise ConfigurationError(
                f"The table {table!r} of {label} is not in the database: run migrate first."
            )
    return {label: oids[table] for label, table in tables.items()}


def _named_rules(
    cursor: driver.Cursor, asked: sharing.Sharing, oids: dict[str, int]
) -> list[sharing.FieldRules]:
    """The rules of the config's ``tables`` (but ``keep``: it changes nothing), as
    rules of a "model" named ``schema.table``, whose oid is added to ``oids``."""
    named = [t for t in asked.decisions.tables if t.columns]
    found_oids = catalog.resolve(cursor, [(t.schema, t.name) for t in named], [])
    found = []
    for table in named:
        if (table.schema, table.name) not in found_oids:
            raise ConfigurationError(f"'tables' names {table.label}: no such table.")
        oids[table.label] = found_oids[(table.schema, table.name)]
        found += [
            sharing.FieldRules(table.label, column, column, rules)
            for column, rules in table.columns
            if rules != sharing.KEEP
        ]
    return found


def _table_rules(
    found: catalog.Catalog, scrubbed: tuple, oids: dict, excluded: set, heirs: dict[int, list[int]]
) -> dict:
    """{table oid: {column: rules}}, each rule checked against the real column.

    The tables that inherit from a scrubbed table (``INHERITS``, ``heirs``)
    hold the same column, whose values a query of the parent returns too:
    they take the same rules, checked against their own column."""
    rules: dict[int, dict[str, tuple]] = {}
    inherited: dict[tuple[int, str], str] = {}  # (heir, column): the model it has it from
    own = {(oids[field.model], field.column) for field in scrubbed}
    for field in scrubbed:
        oid = oids[field.model]
        for table_oid in (oid, *heirs.get(oid, ())):
            if table_oid in excluded or table_oid not in found.tables:
                continue  # its rows are left out (a foreign table's too)
            if table_oid != oid:  # an heir: its own rule wins; two parents' must agree
                if (table_oid, field.column) in own:
                    continue
                other = inherited.setdefault((table_oid, field.column), field.model)
                if other != field.model and rules[table_oid][field.column] != field.rules:
                    raise ConfigurationError(
                        f"{found.tables[table_oid].label} inherits {field.column} from "
                        f"{other} and {field.model}, whose rules for it differ: give it "
                        "the same rule in both, or a model and a rule of its own."
                    )
            table = found.tables[table_oid]
            column = table.column(field.column)
            where = f"The scrub rule of {field.model}.{field.field} ({table.label}.{field.column})"
            if column is None:
                raise ConfigurationError(f"{where}: no such column in the database: run migrate.")
            if field.column in found.key_columns(table_oid):
                if field.rules == sharing.KEEP:  # a key is copied as it is: nothing to do
                    continue
                raise ConfigurationError(
                    f"{where}: the column is part of a key; it can't be scrubbed."
                )
            problem = scrub.problem(field.rules, column)
            if problem:
                raise ConfigurationError(f"{where}: {problem}.")
            rules.setdefault(table_oid, {})[field.column] = field.rules
    return rules


def _heirs(cursor: driver.Cursor, oids: list[int]) -> dict[int, list[int]]:
    """The tables inheriting from each of ``oids``, directly or not (``INHERITS``)."""
    cursor.execute(
        "WITH RECURSIVE heirs (ancestor, heir) AS ("
        " SELECT inhparent, inhrelid FROM pg_inherits WHERE inhparent = ANY(%s::oid[])"
        " UNION SELECT h.ancestor, i.inhrelid FROM pg_inherits i"
        " JOIN heirs h ON i.inhparent = h.heir"
        ") SELECT ancestor, heir FROM heirs ORDER BY ancestor, heir",
        [list(oids)],
    )
    found: dict[int, list[int]] = {}
    for ancestor, heir in cursor.fetchall():
        found.setdefault(ancestor, []).append(heir)
    return found
