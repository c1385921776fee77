"""References a subset follows besides foreign keys, and the keys it cuts: how
the graph takes them, and the config's ``references`` and ``null_keys`` as
parsed and checked against the models at startup (no database needed)."""

from __future__ import annotations

import pytest

from pgclone import configs
from pgclone.checks import check_settings
from pgclone.exceptions import ConfigurationError
from pgclone.pg import catalog
from pgclone.pg.driver import sql
from pgclone.sharing import graph, references, relations, scrub, subset
from pgclone.sharing import sections as sharing
from tests.unit.test_subset_graph import CUSTOMER, ITEM, LOG, ORDER, PRODUCT, TAG, fk

NOTE = 20


def note_on(parent: int, ids: tuple[int, ...] = (7,)) -> relations.Reference:
    return relations.Reference(
        NOTE, ("content_type_id", "object_id"), parent, ("id",), text=True, content_types=ids
    )


SHOP = [fk(ITEM, ORDER), fk(ITEM, PRODUCT), fk(ORDER, CUSTOMER)]


def test_a_reference_is_followed_as_a_nullable_foreign_key():
    """Into the subset: its rows are filtered by what they reference (never
    'down': a note may be about any table). Out of a kept row: it pulls."""
    notes = [*SHOP, note_on(ORDER), note_on(PRODUCT), note_on(TAG)]
    kinds = graph.classify(notes, {ORDER})
    assert kinds[NOTE] == "filtered" and TAG not in kinds  # TAG: copied whole
    assert graph.filters(notes, kinds, NOTE) == [note_on(ORDER), note_on(PRODUCT)]
    assert not [ref for ref in graph.pulls(notes, kinds) if ref.child == NOTE]
    kinds = graph.classify(notes, {NOTE})  # kept notes pull what they are about
    assert kinds[ORDER] == kinds[PRODUCT] == kinds[TAG] == "up"
    assert {ref.parent for ref in graph.pulls(notes, kinds) if ref.child == NOTE} == {
        ORDER, PRODUCT, TAG
    }  # fmt: skip


def test_a_table_whose_kept_keys_a_cut_key_reads_is_no_leaf():
    column = scrub.Column("id", "other", "bigint")
    fks = [fk(ORDER, CUSTOMER), fk(ITEM, ORDER), fk(LOG, CUSTOMER, True)]
    tables = {oid: catalog.Table(oid, "public", f"t{oid}", (column,), ("id",)) for oid in range(30)}
    kinds = graph.classify(fks, {CUSTOMER})
    steps = subset._steps(tables, fks, kinds, subset._keeps(kinds, fks))
    assert set(graph.leaves(steps, kinds)) == {ITEM, LOG}
    assert set(graph.leaves(steps, kinds, read={ITEM})) == {LOG}


def test_a_generic_relation_references_a_table_only_where_its_content_type_is_the_tables():
    value = note_on(ORDER, (7, 9)).child_value(lambda key: sql.Identifier("t", key))
    assert value == sql.SQL("CASE WHEN {} IN ({}) THEN {} END").format(
        sql.Identifier("t", "content_type_id"),
        sql.SQL(", ").join([sql.Literal(7), sql.Literal(9)]),
        sql.SQL("({})::text").format(sql.Identifier("t", "object_id")),
    )


REFERENCES = [
    {"from": "testapp.Customer.profile->order", "to": "testapp.Order"},
    {"from_table": "public.audit.order_id", "to_table": "public.legacy.code"},
]
SUBSET = {"testapp.Order": {"percent": 10}}


def test_references_and_null_keys_are_parsed_into_their_ends(settings):
    settings.PGCLONE_DUMP_CONFIGS = {
        "refs": {
            "subset": SUBSET,
            "references": REFERENCES,
            "null_keys": ["testapp.Customer.last_order", {"table": "public.log.order_id"}],
        }
    }
    config = configs.dump_config("refs")
    source, target = config.references[0].source, config.references[0].target
    assert (source.model, source.column, source.path) == ("testapp.Customer", "profile", ("order",))
    assert (target.model, target.column) == ("testapp.Order", None)
    raw = config.references[1]
    assert (raw.source.schema, raw.source.table, raw.source.column) == (
        "public",
        "audit",
        "order_id",
    )
    assert (raw.target.table, raw.target.column) == ("legacy", "code")
    assert [end.column for end in config.null_keys] == ["last_order_id", "order_id"]
    assert config.sharing.references == config.references


def test_a_config_without_references_keeps_its_digest(settings):
    settings.PGCLONE_DUMP_CONFIGS = {"plain": {"subset": SUBSET}, "refs": {
        "subset": SUBSET, "references": REFERENCES[:1]
    }}  # fmt: skip
    plain, refs = configs.dump_config("plain"), configs.dump_config("refs")
    before = sharing.digest((), plain.subset)
    assert references.digest(before, plain.references, plain.null_keys) == before
    assert references.digest(before, refs.references, refs.null_keys) != before


@pytest.mark.parametrize(
    "config, message",
    [
        ({"references": REFERENCES}, "this config has no 'subset'"),
        ({"references": {"from": "x"}}, "must be a list of"),
        ({"references": [{"from": "testapp.Customer.email"}]}, "one of each"),
        (
            {"references": [{"from": "testapp.Nope.id", "to": "testapp.Order"}]},
            "unknown model 'testapp.Nope'",
        ),
        (
            {"references": [{"from": "testapp.Customer.nope", "to": "testapp.Order"}]},
            "testapp.Customer has no field 'nope'",
        ),
        (
            {"references": [{"from": "testapp.Customer", "to": "testapp.Order"}]},
            "name the field|must name a column",
        ),
        (
            {"references": [{"from": "testapp.Customer.email->x", "to": "testapp.Order"}]},
            "testapp.Customer.email is no JSON field",
        ),
        (
            {"references": [{"from": "testapp.Order.created", "to": "testapp.Order"}]},
            "testapp.Order.created and testapp.Order are of types that don't compare",
        ),
        (
            {"references": [{"from_table": "audit.order_id", "to": "testapp.Order"}]},
            "must name a column as 'schema.table.column'",
        ),
        ({"null_keys": ["testapp.Customer.email"]}, "is no foreign key"),
        ({"null_keys": ["testapp.OrderItem.order"]}, "is NOT NULL"),
        ({"null_keys": ["testapp.Customer.profile->x"]}, "a column, not a JSON key"),
        ({"null_keys": [{"column": "public.log.order_id"}]}, "must be 'app.Model.field' or"),
    ],
)
def test_bad_references_are_refused_at_startup(settings, config, message):
    config = {"subset": SUBSET, **config} if "no 'subset'" not in message else config
    settings.PGCLONE_DUMP_CONFIGS = {"refs": config}
    with pytest.raises(ConfigurationError, match=message):
        configs.dump_config("refs")
    assert any(error.id == "pgclone.E003" for error in check_settings())
