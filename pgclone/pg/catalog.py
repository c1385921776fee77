"""What the planner reads from PostgreSQL's catalog: tables, columns, keys.

Foreign keys come from ``pg_constraint``, so the graph holds the database's
own constraints whoever made them (Django's, raw SQL's, many-to-many through
tables, self-references, multi-column keys).
"""

from __future__ import annotations

from dataclasses import dataclass

from pgclone.pg import driver, postgres, search_path

_TEXT_TYPES = ("character varying", "character", "text", "citext", "name")
_KINDS = {"inet": "inet", "uuid": "uuid", "jsonb": "json"}


@dataclass(frozen=True)
class Column:
    """A column as the catalog gives it: what a scrub rule needs to know of the
    column it replaces."""

    name: str
    kind: str  # text, inet, uuid, json or other
    type_name: str  # the base type, as format_type() writes it
    max_length: int | None = None
    nullable: bool = True
    unique: bool = False
    cast: str | None = None  # what an sql rule's output is cast to (type_name if None)


@dataclass(frozen=True)
class Table:
    oid: int
    schema: str
    name: str
    columns: tuple[Column, ...]  # the ones COPY writes (no generated columns)
    primary_key: tuple[str, ...]

    @property
    def label(self) -> str:
        return postgres.display_name(self.schema, self.name)

    def column(self, name: str) -> Column | None:
        return next((column for column in self.columns if column.name == name), None)


@dataclass(frozen=True)
class ForeignKey:
    child: int
    child_columns: tuple[str, ...]
    parent: int
    parent_columns: tuple[str, ...]
    nullable: bool = False  # whether a row may reference nothing (a column may be NULL)
    # one of the keys PostgreSQL makes for each partition of a partitioned table
    # a key references: the planner would take them for as many keys to match
    into_partition: bool = False
    # one column, of the type it references, leading a btree index of the child:
    # the rows referencing kept keys are found by that index (plans.SETTINGS)
    indexed: bool = False

    @property
    def lookup(self) -> bool:
        """Whether the rows referencing kept keys may be found by ``= ANY(ARRAY(…))``
        of those keys (a bitmap scan of the child's index) rather than by a hash
        of them: without such an index, that would compare each row with each key."""
        return len(self.child_columns) == 1 and self.indexed


@dataclass(frozen=True)
class Catalog:
    tables: dict[int, Table]
    foreign_keys: tuple[ForeignKey, ...]

    def key_columns(self, oid: int) -> set[str]:
        """Columns rows are matched on: the primary key's and every foreign key's."""
        found = set(self.tables[oid].primary_key)
        for fk in self.foreign_keys:
            found.update(fk.child_columns if fk.child == oid else ())
            found.update(fk.parent_columns if fk.parent == oid else ())
        return found


_TABLES = """
    SELECT c.oid::bigint, n.nspname, c.relname
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND c.relpersistence IN ('p', 'u')  -- pg_dump copies unlogged data
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%'
"""
# The tables whose rows a plain dump copies itself, biggest first (as last
# vacuumed or analysed): those whose
# rows pg_dump's data section writes (as _DATA_COLUMNS finds them), but those
# without a column COPY can name. An extension's own tables are left to
# pg_dump, which writes the rows of its configuration tables, with their filter.
_DATA_TABLES = """
    SELECT c.oid::bigint, n.nspname, c.relname,
           ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attgenerated = '' ORDER BY a.attnum)
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND c.relpersistence IN ('p', 'u')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      WHERE d.classid = 'pg_catalog.pg_class'::regclass
                        AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY c.relpages DESC, n.nspname, c.relname  -- pg_relation_size would wait for a lock
"""
_COLUMNS = """
    SELECT a.attrelid::bigint, a.attname, pg_catalog.format_type(a.atttypid, NULL),
           CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND a.atttypmod > 4
                THEN a.atttypmod - 4 END,
           NOT a.attnotnull,
           EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                   WHERE i.indrelid = a.attrelid AND i.indisunique
                     AND a.attnum = ANY (i.indkey::int2[]))
           -- in an expression of a unique index, as unique(lower(email)): the index
           -- depends on each column its expressions read
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_depend d
                        ON d.classid = 'pg_catalog.pg_class'::regclass
                       AND d.objid = i.indexrelid
                       AND d.refclassid = 'pg_catalog.pg_class'::regclass
                       AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum
                      WHERE i.indrelid = a.attrelid AND i.indisunique
                        AND i.indexprs IS NOT NULL),
           a.attgenerated <> '',
           -- what an sql rule's output is cast to: the declared type (numeric(5,2)
           -- overflows at the check, not at the restore), but for the types whose
           -- explicit cast cuts or pads silently (character and bit strings, and
           -- arrays of them): without a length, the check or the restore says it
           coalesce((SELECT CASE WHEN e.oid = 'bpchar'::regtype THEN 'bpchar'
                                 WHEN e.oid = 'varchar'::regtype THEN 'character varying'
                                 WHEN e.oid IN ('bit'::regtype, 'varbit'::regtype)
                                 THEN 'bit varying' END
                            || CASE WHEN t.typcategory = 'A' THEN '[]' ELSE '' END
                     FROM pg_catalog.pg_type t
                     JOIN pg_catalog.pg_type e
                       ON e.oid = CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE t.oid END
                     WHERE t.oid = a.atttypid),
                    pg_catalog.format_type(a.atttypid, a.atttypmod))
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = ANY (%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attrelid, a.attnum
"""
_PRIMARY_KEYS = """
    SELECT i.indrelid::bigint, a.attname
    FROM pg_catalog.pg_index i
    JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) ON true
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indisprimary AND i.indrelid = ANY (%s::oid[])
    ORDER BY i.indrelid, k.n
"""
_FOREIGN_KEYS = """
    SELECT con.conrelid::bigint, con.confrelid::bigint,
           ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, n)
                 JOIN pg_catalog.pg_attribute a
                   ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.n),
           ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, n)
                 JOIN pg_catalog.pg_attribute a
                   ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.n),
           EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = con.conrelid
                   AND a.attnum = ANY (con.conkey) AND NOT a.attnotnull),
           EXISTS (SELECT 1 FROM pg_catalog.pg_constraint up
                   WHERE up.oid = con.conparentid AND up.confrelid <> con.confrelid),
           cardinality(con.conkey) = 1
           AND (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = con.conrelid AND a.attnum = con.conkey[1])
             = (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = con.confrelid AND a.attnum = con.confkey[1])
           -- not an array: ARRAY(SELECT k …) of arrays is two-dimensional
           AND (SELECT t.typcategory FROM pg_catalog.pg_attribute a
                JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                WHERE a.attrelid = con.conrelid AND a.attnum = con.conkey[1]) <> 'A'
           -- an index the planner takes for `=` on the column: btree, its default
           -- operator class and the column's collation, whole and valid
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                       JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                       JOIN pg_catalog.pg_am am ON am.oid = ic.relam
                       JOIN pg_catalog.pg_opclass oc ON oc.oid = i.indclass[0]
                       JOIN pg_catalog.pg_attribute a
                         ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
                       WHERE i.indrelid = con.conrelid AND i.indkey[0] = con.conkey[1]
                         AND i.indisvalid AND i.indpred IS NULL AND am.amname = 'btree'
                         AND oc.opcdefault AND i.indcollation[0] = a.attcollation)
    FROM pg_catalog.pg_constraint con
    WHERE con.contype = 'f' AND con.conrelid = ANY (%s::oid[]) AND con.confrelid = ANY (%s::oid[])
    ORDER BY con.conrelid, con.conname
"""


def data_tables(cursor: driver.Cursor) -> list[tuple[int, str, str, tuple[str, ...]]]:
    """(oid, schema, name, columns) of each table a plain dump copies itself."""
    cursor.execute(_DATA_TABLES)
    found = cursor.fetchall()
    return [(oid, schema, name, tuple(columns)) for oid, schema, name, columns in found if columns]


def read(cursor: driver.Cursor) -> Catalog:
    """The ordinary tables of the database ``cursor`` is connected to, with their keys."""
    cursor.execute(_TABLES)
    names = {oid: (schema, name) for oid, schema, name in cursor.fetchall()}
    oids = list(names)
    cursor.execute(_COLUMNS, [oids])
    columns: dict[int, list[Column]] = {oid: [] for oid in oids}
    for oid, name, type_name, length, nullable, unique, generated, cast in cursor.fetchall():
        if not generated:
            kind = "text" if type_name in _TEXT_TYPES else _KINDS.get(type_name, "other")
            columns[oid].append(
                Column(name, kind, type_name, length, nullable=nullable, unique=unique, cast=cast)
            )
    cursor.execute(_PRIMARY_KEYS, [oids])
    primary: dict[int, list[str]] = {}
    for oid, name in cursor.fetchall():
        primary.setdefault(oid, []).append(name)
    cursor.execute(_FOREIGN_KEYS, [oids, oids])
    foreign_keys = tuple(
        ForeignKey(child, tuple(child_columns), parent, tuple(parent_columns), *flags)
        for child, parent, child_columns, parent_columns, *flags in cursor.fetchall()
    )
    tables = {
        oid: Table(oid, schema, name, tuple(columns[oid]), tuple(primary.get(oid, ())))
        for oid, (schema, name) in sorted(names.items(), key=lambda item: item[1])
    }
    return Catalog(tables, foreign_keys)


def resolve(
    cursor: driver.Cursor, names: list[str | tuple[str, str]], path: list[str]
) -> dict[str | tuple[str, str], int]:
    """The oids of tables named as Django names them (found in the schemas of
    ``path``, as pgclone.pg.search_path.project_path gives them) or as (schema,
    table); names that are no table are left out."""
    found: dict[str | tuple[str, str], int] = {
        name: oid
        for name, (_, oid) in search_path.find(
            cursor, path, (n for n in names if isinstance(n, str))
        ).items()
    }
    for name in names:
        if isinstance(name, tuple):
            cursor.execute(
                "SELECT c.oid::bigint FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                list(name),
            )
            row = cursor.fetchone()
            if row is not None:
                found[name] = row[0]
    return found


@dataclass(frozen=True)
class DataColumn:
    """A column a dump copies, with the type it holds its values as: domains
    and arrays resolved to their base type (``base``, its ``category`` in
    ``pg_type``), so a domain over text or an array of inet is seen for what it is."""

    schema: str
    table: str
    name: str
    type_name: str  # as format_type() writes the declared type
    base: str  # the base type's name (text, jsonb, geometry…)
    category: str  # pg_type.typcategory of the base type (S: a string type)
    key: bool = False  # in the primary key or a foreign key: copied as it is


_DATA_COLUMNS = """
    WITH RECURSIVE tables AS (
        SELECT c.oid, n.nspname, c.relname
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND c.relpersistence IN ('p', 'u')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
          -- an extension's own tables: pg_dump writes their rows only as the
          -- extension says (its configuration tables), not as the project's
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE d.classid = 'pg_catalog.pg_class'::regclass
                            AND d.objid = c.oid AND d.deptype = 'e')
    ), base (start, oid, depth) AS (
        SELECT t.oid, t.oid, 0 FROM pg_catalog.pg_type t
        WHERE t.oid IN (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid IN (SELECT oid FROM tables))
        UNION ALL
        -- a domain's base type, an array's element type, until neither
        SELECT b.start, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END,
               b.depth + 1
        FROM base b JOIN pg_catalog.pg_type t ON t.oid = b.oid
        WHERE b.depth < 16
          AND (t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0))
    ), resolved AS (
        SELECT DISTINCT ON (b.start) b.start, t.typname, t.typcategory
        FROM base b JOIN pg_catalog.pg_type t ON t.oid = b.oid
        ORDER BY b.start, b.depth DESC
    )
    SELECT tb.nspname, tb.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
           r.typname, r.typcategory::text,
           EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con
                   WHERE con.conrelid = a.attrelid AND con.contype IN ('p', 'f')
                     AND a.attnum = ANY (con.conkey))
    FROM tables tb
    JOIN pg_catalog.pg_attribute a ON a.attrelid = tb.oid
    JOIN resolved r ON r.start = a.atttypid
    WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
    ORDER BY tb.nspname, tb.relname, a.attnum
"""


def data_columns(cursor: driver.Cursor) -> list[DataColumn]:
    """Every column whose values a dump of ``cursor``'s database copies (the
    ordinary tables', but generated columns and extensions' own tables)."""
    cursor.execute(_DATA_COLUMNS)
    return [
        DataColumn(schema, table, name, type_name, base, category, key)
        for schema, table, name, type_name, base, category, key in cursor.fetchall()
    ]
