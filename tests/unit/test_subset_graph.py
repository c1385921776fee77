"""How the planner classes tables from the foreign-key graph (no database needed)."""

from __future__ import annotations

from pgclone.catalog import ForeignKey
from pgclone.subset import classify

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
