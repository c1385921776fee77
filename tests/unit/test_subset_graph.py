"""How the planner classes tables from the foreign-key graph (no database needed)."""

from __future__ import annotations

from pgclone.pg.catalog import ForeignKey
from pgclone.sharing.graph import classify

ORDER, ITEM, PRODUCT, CUSTOMER, ADDRESS, COUNTRY, LOG, TAG, ORDER_TAG = range(1, 10)


def fk(child: int, parent: int, nullable: bool = False) -> ForeignKey:
    return ForeignKey(child, ("ref",), parent, ("id",), nullable)


SHOP = [
    fk(ITEM, ORDER), fk(ITEM, PRODUCT), fk(ORDER, CUSTOMER), fk(ADDRESS, CUSTOMER),
    fk(ADDRESS, COUNTRY), fk(CUSTOMER, ORDER, nullable=True), fk(CUSTOMER, CUSTOMER, True),
    fk(ORDER_TAG, ORDER), fk(ORDER_TAG, TAG),
]  # fmt: skip


def test_tables_below_above_and_beside_a_root():
    assert classify(SHOP, {ORDER}) == {
        ORDER: "root", ITEM: "down", ORDER_TAG: "down", PRODUCT: "up", CUSTOMER: "up",
        TAG: "up", ADDRESS: "filtered",
    }  # fmt: skip
    # COUNTRY (referenced by a filtered table only) and LOG (unconnected) stay whole.


def test_a_nullable_key_into_the_root_pulls_rather_than_filters():
    kinds = classify([fk(CUSTOMER, ORDER, nullable=True), fk(LOG, ORDER)], {ORDER})
    assert kinds == {ORDER: "root", LOG: "down", CUSTOMER: "filtered"}


def test_the_other_side_of_a_many_to_many_as_root():
    assert classify(SHOP, {TAG})[ORDER] == "up"
    assert classify(SHOP, {TAG})[ORDER_TAG] == "down"


def plan_steps(fks: list[ForeignKey], roots: set[int]) -> tuple[dict, list, dict]:
    from pgclone.pg import catalog
    from pgclone.sharing import graph, scrub, subset

    column = scrub.Column("id", "other", "bigint")
    oids = {oid for key in fks for oid in (key.child, key.parent)}
    tables = {oid: catalog.Table(oid, "public", f"t{oid}", (column,), ("id",)) for oid in oids}
    kinds = classify(fks, roots)
    keeps = subset._keeps(kinds, fks)
    steps = subset._steps(tables, fks, kinds, keeps)
    return kinds, steps, graph.leaves(steps, kinds)


def test_a_pull_along_a_down_tables_own_filter_is_left_out_unless_rows_enter_it_otherwise():
    _, steps, _ = plan_steps([fk(ORDER, CUSTOMER), fk(ITEM, ORDER), fk(ITEM, PRODUCT)], {CUSTOMER})
    pulls = {(step.inputs, step.output) for step in steps if step.seed is None}
    assert pulls == {((ITEM,), PRODUCT)}  # items' orders and orders' customers are kept already
    # A nullable key from customers (a root) into orders puts other orders in: their
    # customers must be pulled, and so must the orders of the items of those orders.
    _, steps, _ = plan_steps(
        [fk(ORDER, CUSTOMER), fk(ITEM, ORDER), fk(CUSTOMER, ORDER, nullable=True)], {CUSTOMER}
    )
    pulls = {(step.inputs, step.output) for step in steps if step.seed is None}
    assert pulls == {((ORDER,), CUSTOMER), ((CUSTOMER,), ORDER)}


def test_leaves_are_chosen_as_they_are_written_and_steps_run_parents_first():
    from pgclone.sharing.graph import ordered

    fks = [fk(ITEM, ORDER), fk(ITEM, PRODUCT), fk(ORDER, CUSTOMER), fk(LOG, CUSTOMER, True)]
    kinds, steps, leaves = plan_steps(fks, {CUSTOMER})
    assert kinds[LOG] == "filtered" and set(leaves) == {LOG}  # items are read: products pull
    outputs = [step.output for step in ordered(steps)]
    assert outputs.index(ORDER) < outputs.index(ITEM) < outputs.index(PRODUCT)


def test_tables_are_final_once_no_step_left_can_add_to_them():
    """What the main session hands to other sessions while it goes on: a table
    whose kept rows no step that may still run (or run again) adds to."""
    from pgclone.sharing import graph, plans, subset

    chain = [fk(ORDER, CUSTOMER), fk(ITEM, ORDER), fk(ITEM, PRODUCT)]
    _, steps, _ = plan_steps(chain, {CUSTOMER})
    plan = subset.Plan(
        tables=(), roots=(), setup=tuple((oid, None) for oid in (CUSTOMER, ORDER, ITEM, PRODUCT)),
        steps=graph.ordered(steps), outputs=(), digest="",
    )  # fmt: skip
    order = [step.output for step in plan.steps]
    assert order == [ORDER, ITEM, PRODUCT]
    assert plans.final_tables(plan, {0, 1, 2}) == {CUSTOMER}
    assert plans.final_tables(plan, {1, 2}) == {CUSTOMER, ORDER}
    assert plans.final_tables(plan, {2}) == {CUSTOMER, ORDER, ITEM}
    assert plans.final_tables(plan, set()) == {CUSTOMER, ORDER, ITEM, PRODUCT}
    # In a cycle nothing in it is final before the end: customers pull orders back up.
    cycle = [*chain, fk(CUSTOMER, ORDER, nullable=True)]
    _, steps, _ = plan_steps(cycle, {CUSTOMER})
    plan = subset.Plan((), (), plan.setup, graph.ordered(steps), (), "")
    everything = set(range(len(plan.steps)))
    assert plans.final_tables(plan, everything) == set()
    pulls_customers = {i for i, step in enumerate(plan.steps) if step.output == CUSTOMER}
    assert plans.final_tables(plan, pulls_customers) == set()  # ... then orders, items, products
    assert plans.final_tables(plan, set()) == {CUSTOMER, ORDER, ITEM, PRODUCT}
