"""References a subset follows besides the database's foreign keys, and the
foreign keys it cuts, as the catalog shows them when a plan is made.

A :class:`Reference` is followed as a nullable foreign key is (see
:mod:`pgclone.sharing.subset`): kept rows of a root, down or up table bring
the rows they reference, and a table that references subset tables is
*filtered* (its rows whose every reference into the subset is kept). Each is
one of:

- a Django generic relation (a ``GenericForeignKey``: a content type and an
  ``object_id``), one reference per table its content types name: its value
  is the ``object_id`` where the content type is one of that table's, else
  NULL (a row referencing nothing there);
- a reference declared by the config (:mod:`pgclone.sharing.references`): a
  column, or a key of a JSON column.

Values compare as they are when both sides have one type (integers of any
size, texts of any kind), else as text: the key's text form is what Django
writes into a text ``object_id``, and comparing text never fails the dump on
a malformed value (a cast of the ``object_id`` would).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pgclone.exceptions import ConfigurationError
from pgclone.pg import catalog, driver
from pgclone.pg.driver import sql
from pgclone.sharing import references, sections
from pgclone.sharing.references import Declared, End

# A key of a kept row: a column's name, or (a JSON column's name, the keys of a path)
Key = str | tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class Reference:
    """A reference without a foreign key, as the graph follows it (a nullable
    foreign key's fields: pgclone.sharing.graph reads child, parent, nullable)."""

    child: int
    child_columns: tuple[Key, ...]  # [content type column,] the value's column or JSON key
    parent: int
    parent_columns: tuple[str, ...]  # the one column it references
    text: bool = False  # compared as text
    content_types: tuple[int, ...] = ()  # a generic relation's, of the parent's model
    nullable: bool = True
    into_partition: bool = False
    lookup: bool = False

    def child_value(self, ref: Callable[[Key], sql.Composable]) -> sql.Composable:
        """What a child's row references (``ref``: a key's expression), NULL if nothing."""
        value = ref(self.child_columns[-1])
        if self.text:
            value = sql.SQL("({})::text").format(value)
        if not self.content_types:
            return value
        return sql.SQL("CASE WHEN {} IN ({}) THEN {} END").format(
            ref(self.child_columns[0]),
            sql.SQL(", ").join(map(sql.Literal, self.content_types)),
            value,
        )

    def parent_value(self, ref: Callable[[Key], sql.Composable]) -> sql.Composable:
        value = ref(self.parent_columns[0])
        return sql.SQL("({})::text").format(value) if self.text else value


def edges(
    cursor: driver.Cursor,
    asked: sections.Sharing,
    found: catalog.Catalog,
    tables: dict[int, catalog.Table],
    fks: list[catalog.ForeignKey],
    path: list[str],
    excluded: set[int],
) -> tuple[list, list[catalog.ForeignKey]]:
    """What a subset follows (``fks`` but the cut ones, the generic relations
    and the declared references), and the foreign keys it cuts."""
    if not asked.subset:
        return fks, []
    cut_keys = cut(cursor, asked.null_keys, found, path, excluded)
    followed = [fk for fk in fks if fk not in cut_keys]
    followed += generic(cursor, found, tables, path)
    followed += declared(cursor, asked.references, found, path, excluded)
    return followed, cut_keys


def nulled(cut_keys: list[catalog.ForeignKey], kinds: dict[int, str], keeps: dict) -> dict:
    """{table: {cut key's column: (the table it references, the condition on
    ``t`` that the row it references is kept)}}, where that table is a subset's
    (else every row of it is kept: the key stays as it is). ``keeps``: the
    subset's pgclone.sharing.subset.Keep by table."""
    nulls: dict[int, dict[str, tuple[int, sql.Composable]]] = {}
    for fk in cut_keys:
        if fk.parent in kinds:
            (column,), parent = fk.child_columns, keeps[fk.parent]
            kept = sql.SQL("t.{} IN (SELECT {} FROM {})").format(
                sql.Identifier(column), parent.column(fk.parent_columns[0]), parent.table
            )
            nulls.setdefault(fk.child, {})[column] = (fk.parent, kept)
    return nulls


def key_ref(alias: str | None, key: Key) -> sql.Composable:
    """A key's expression on a table's row (``alias``, if any)."""
    name, path = (key, ()) if isinstance(key, str) else key
    column = sql.Identifier(alias, name) if alias else sql.Identifier(name)
    if not path:
        return column
    keys = sql.SQL(", ").join(map(sql.Literal, path))
    return sql.SQL("({} #>> ARRAY[{}]::text[])").format(column, keys)


def referenced_kept(ref: Reference, parent_keep: sql.Composable, parent_key) -> sql.Composable:
    """The condition on ``t`` that what ``ref`` references, if anything, is kept
    (``parent_key``: the keep table's column of a parent's key)."""
    value = ref.child_value(lambda key: key_ref("t", key))
    kept = ref.parent_value(lambda key: sql.SQL("k.{}").format(parent_key(key)))
    return sql.SQL("({value} IS NULL OR {value} IN (SELECT {kept} FROM {keep} AS k))").format(
        value=value, kept=kept, keep=parent_keep
    )


def referencing_kept(ref: Reference, child_keep: sql.Composable, child_key) -> sql.Composable:
    """The condition on ``p`` that a kept row of the child references it."""
    value = ref.child_value(lambda key: sql.SQL("k.{}").format(child_key(key)))
    key = ref.parent_value(lambda name: key_ref("p", name))
    return sql.SQL("{} IN (SELECT {} FROM {} AS k)").format(key, value, child_keep)


def generic(
    cursor: driver.Cursor, found: catalog.Catalog, tables: dict[int, catalog.Table], path: list[str]
) -> list[Reference]:
    """The generic relations of the installed models among ``tables`` (the
    plan's), one reference per table of ``tables`` their content types name."""
    from django.apps import apps

    if not apps.is_installed("django.contrib.contenttypes"):
        return []
    from django.contrib.contenttypes.fields import GenericForeignKey
    from django.contrib.contenttypes.models import ContentType

    relations = {}
    for model in apps.get_models():
        for field in model._meta.private_fields:
            if isinstance(field, GenericForeignKey) and not model._meta.proxy:
                columns = (
                    model._meta.get_field(field.ct_field).column,
                    model._meta.get_field(field.fk_field).column,
                )
                relations[model._meta.db_table, columns] = model
    if not relations:
        return []
    oids = catalog.resolve(cursor, [t for t, _ in relations] + [ContentType._meta.db_table], path)
    types = found.tables.get(oids.get(ContentType._meta.db_table))
    targets = _content_type_tables(cursor, types, tables, path) if types else {}
    found_refs = []
    for (table, (type_column, id_column)), _ in sorted(relations.items()):
        child = tables.get(oids.get(table))
        column = child and child.column(id_column)
        if child is None or column is None or child.column(type_column) is None:
            continue
        for parent_oid, ids in sorted(targets.items()):
            key = tables[parent_oid].column(tables[parent_oid].primary_key[0])
            if key is None:  # a generated column
                continue
            compare = references.comparison(column.type_name, key.type_name)
            found_refs.append(Reference(
                child.oid, (type_column, id_column), parent_oid, (key.name,),
                text=compare != "direct", content_types=tuple(ids),
            ))  # fmt: skip
    return found_refs


def _content_type_tables(
    cursor: driver.Cursor, table: catalog.Table, tables: dict[int, catalog.Table], path: list[str]
) -> dict[int, list[int]]:
    """{table oid: the ids of its models' content types} (read from ``table``),
    for those of ``tables`` with a one-column primary key (a proxy's model is
    its concrete one's)."""
    from django.apps import apps

    cursor.execute(
        sql.SQL("SELECT id, app_label, model FROM {} ORDER BY id").format(
            sql.Identifier(table.schema, table.name)
        )
    )
    by_name: dict[str, list[int]] = {}
    for type_id, app_label, model_name in cursor.fetchall():
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:  # a model no longer installed
            continue
        by_name.setdefault(model._meta.concrete_model._meta.db_table, []).append(type_id)
    oids = catalog.resolve(cursor, list(by_name), path)
    return {
        oids[name]: ids
        for name, ids in by_name.items()
        if oids.get(name) in tables and len(tables[oids[name]].primary_key) == 1
    }


def declared(
    cursor: driver.Cursor,
    asked: tuple[Declared, ...],
    found: catalog.Catalog,
    path: list[str],
    excluded: set[int],
) -> list[Reference]:
    """The config's declared references, checked against the catalog (those
    from or to a table the dump leaves out are no part of it)."""
    found_refs = []
    for ref in asked:
        where = f"The reference from {ref.source.written} to {ref.target.written}"
        child, column = _column(cursor, ref.source, found, path, excluded, where)
        parent, key = _column(cursor, ref.target, found, path, excluded, where)
        if child is None or parent is None:
            continue
        source_type = "text" if ref.source.path else column.type_name
        if ref.source.path and column.type_name not in ("json", "jsonb"):
            raise ConfigurationError(
                f"{where}: {column.name} is {column.type_name}, not JSON: '->key' reads a "
                "key of a json or jsonb column."
            )
        compare = references.comparison(source_type, key.type_name)
        if compare is None:
            raise ConfigurationError(
                f"{where}: {source_type} and {key.type_name} {references.MISMATCH}."
            )
        value: Key = (column.name, ref.source.path) if ref.source.path else column.name
        found_refs.append(Reference(child, (value,), parent, (key.name,), text=compare != "direct"))
    return found_refs


def _column(
    cursor: driver.Cursor,
    end: End,
    found: catalog.Catalog,
    path: list[str],
    excluded: set[int],
    where: str,
) -> tuple[int | None, catalog.Column | None]:
    """The table (None if left out) and the column an end names (its primary
    key's, if it names none)."""
    name = _table_name(end)
    oid = catalog.resolve(cursor, [name], path).get(name)
    if oid in excluded:
        return None, None
    table = found.tables.get(oid)
    if table is None:
        what = "not in the database" if oid is None else "not an ordinary table"
        raise ConfigurationError(f"{where}: the table {_display(name)} is {what}.")
    if end.column is None and len(table.primary_key) != 1:
        raise ConfigurationError(
            f"{where}: {table.label} has no one-column primary key; name the column it "
            "references, as 'schema.table.column'."
        )
    column = table.column(end.column or table.primary_key[0])
    if column is None:
        columns = ", ".join(c.name for c in table.columns)
        raise ConfigurationError(
            f"{where}: {table.label} has no column {end.column!r}; its columns are {columns}."
        )
    return oid, column


def _table_name(end: End) -> str | tuple[str, str]:
    if end.model is None:
        return end.schema, end.table
    from django.apps import apps

    return apps.get_model(end.model)._meta.db_table


def _display(name: str | tuple[str, str]) -> str:
    return name if isinstance(name, str) else ".".join(name)


def cut(
    cursor: driver.Cursor,
    asked: tuple[End, ...],
    found: catalog.Catalog,
    path: list[str],
    excluded: set[int],
) -> list[catalog.ForeignKey]:
    """The foreign keys of the config's ``null_keys``, checked: each one
    column, nullable, of a foreign key the database has."""
    keys = []
    for end in asked:
        where = f"'null_keys' names {end.written}"
        oid, column = _column(cursor, end, found, path, excluded, where)
        if oid is None:
            continue
        fks = [k for k in found.foreign_keys if k.child == oid and column.name in k.child_columns]
        if not fks:
            raise ConfigurationError(
                f"{where}: the database has no foreign key on {column.name} (a key Django "
                "makes without a constraint, db_constraint=False, is never followed)."
            )
        if any(len(fk.child_columns) > 1 for fk in fks):
            raise ConfigurationError(
                f"{where}: {column.name} is part of a foreign key of several columns; "
                "'null_keys' cuts one-column keys only."
            )
        if not column.nullable:
            raise ConfigurationError(
                f"{where}: {column.name} is NOT NULL in the database, so it can't be written "
                "NULL: remove it from 'null_keys'."
            )
        keys += fks
    return keys
