"""Subsets that follow what the database has no foreign key for (generic
relations, declared references) and that cut foreign keys (``null_keys``),
on the real server; and one such dump made and restored by a worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType

from pgclone.exceptions import ConfigurationError
from pgclone.models import Job
from pgclone.pg import postgres
from pgclone.sharing import plans
from tests.helpers import psql, scratch_database
from tests.integration.test_subset import (  # noqa: F401 (shop: a fixture)
    columns,
    load_into,
    plan_of,
    shop,
)
from tests.processes import own_queue, start_worker, stop_worker
from tests.testapp.models import Customer, Note, Order, Product

pytestmark = pytest.mark.django_db(transaction=True)

RAW = (
    # rows of a customer's, with an order's id the database knows nothing of
    "CREATE TABLE pgclone_ref_audit (id int PRIMARY KEY, "
    "customer_id bigint NOT NULL REFERENCES testapp_customer (id), order_ref bigint, "
    "happened date NOT NULL DEFAULT '2026-01-01');"
    # a log of orders, whose key null_keys cuts: not connected to the subset otherwise
    "CREATE TABLE pgclone_ref_log (id int PRIMARY KEY, "
    "order_id bigint REFERENCES testapp_order (id), total bigint NOT NULL);"
)


@pytest.fixture
def linked(shop, test_database_name: str) -> Iterator[dict[str, Any]]:  # noqa: F811
    """Notes on orders, customers and products (and one whose object id is no
    key at all); a raw table of audit rows pointing at orders of other
    customers; customer 0's profile naming two more orders by id; a raw log
    with a nullable key into orders."""
    customers, orders = shop["customers"], shop["orders"]
    products = list(Product.objects.order_by("pk"))
    types = {
        model: ContentType.objects.get_for_model(model) for model in (Order, Customer, Product)
    }
    Note.objects.bulk_create(
        [Note(content_type=types[Order], object_id=str(order.pk)) for order in orders]
        + [Note(content_type=types[Customer], object_id=str(c.pk)) for c in customers[:5]]
        + [Note(content_type=types[Product], object_id=str(p.pk)) for p in products[:3]]
        + [Note(content_type=types[Order], object_id="not a key")]
    )
    # customer 0's orders are 0, 200, 400…: these belong to customers 7, 8, 9, 11
    audited, in_profile = [orders[7], orders[8]], [orders[9], orders[11]]
    psql(
        RAW + "INSERT INTO pgclone_ref_audit (id, customer_id, order_ref) VALUES "
        f"(1, {customers[0].pk}, {audited[0].pk}), (2, {customers[0].pk}, {audited[1].pk}), "
        f"(3, {customers[0].pk}, NULL), (4, {customers[1].pk}, {orders[12].pk});"
        "INSERT INTO pgclone_ref_log SELECT o.id, o.id, o.id FROM testapp_order o "
        "WHERE o.id % 7 = 0",
        test_database_name,
    )
    Customer.objects.filter(pk=customers[0].pk).update(
        profile={"order": in_profile[0].pk, "also": {"order": str(in_profile[1].pk)}}
    )
    yield {**shop, "audited": audited, "in_profile": in_profile, "products": products}
    psql("DROP TABLE pgclone_ref_audit, pgclone_ref_log", test_database_name)


def kept(settings, config: dict) -> tuple[Any, dict[str, Any]]:
    plan = plan_of(settings, config)
    return plan, plans.run_plan(postgres.conn_info(), plan)


def ids(rows: dict, plan: Any, table: str, column: str = "id") -> set:
    return {row[column] for row in columns(rows, plan, table)}


def test_a_generic_relation_pulls_the_rows_it_points_to(settings, linked):
    noted = Note.objects.filter(content_type__model="product").order_by("pk")
    config = {"subset": {"testapp.Note": {"where": f"id IN ({noted[0].pk}, {noted[1].pk})"}}}
    plan, rows = kept(settings, config)
    kinds = {t.name: t.kind for t in plan.tables}
    assert kinds["testapp_note"] == "root" and kinds["testapp_product"] == "up"
    # the two products the kept notes are about, none of the other 18
    assert ids(rows, plan, "testapp_product") == {p.pk for p in linked["products"][:2]}


def test_rows_of_a_generic_relation_are_kept_with_what_they_point_to(
    settings, linked, test_database_name
):
    """A subset of orders: the notes on kept orders, customers and products are
    kept, those on rows left out are not; a key that is no key matches nothing."""
    plan, rows = kept(settings, {"subset": {"testapp.Order": {"where": "id % 10 = 1"}}})
    assert {t.name: t.kind for t in plan.tables}["testapp_note"] == "filtered"
    orders, customers = ids(rows, plan, "testapp_order"), ids(rows, plan, "testapp_customer")
    notes = {(n.content_type.model, n.object_id) for n in Note.objects.filter(
        pk__in=ids(rows, plan, "testapp_note")
    ).select_related("content_type")}  # fmt: skip
    assert {int(i) for model, i in notes if model == "order"} == orders
    assert {int(i) for model, i in notes if model == "customer"} == {
        c.pk for c in linked["customers"][:5]
    } & customers
    assert {int(i) for model, i in notes if model == "product"} == {
        p.pk for p in linked["products"][:3]
    } & ids(rows, plan, "testapp_product")
    assert ("order", "not a key") not in notes
    with scratch_database() as copy:  # every constraint holds among the kept rows
        counts = load_into(plan, test_database_name, copy)
    assert counts["public.testapp_note"] == len(notes)


def test_declared_references_from_a_raw_table_and_a_json_key_pull_their_targets(settings, linked):
    root = {"testapp.Customer": {"where": f"id = {linked['customers'][0].pk}"}}
    plan, rows = kept(settings, {"subset": root})
    without = ids(rows, plan, "testapp_order")
    references = [
        {"from_table": "public.pgclone_ref_audit.order_ref", "to": "testapp.Order"},
        {"from": "testapp.Customer.profile->order", "to": "testapp.Order"},
        {"from": "testapp.Customer.profile->also->order", "to_table": "public.testapp_order"},
    ]
    plan, rows = kept(settings, {"subset": root, "references": references})
    orders = ids(rows, plan, "testapp_order")
    referenced = {o.pk for o in linked["audited"] + linked["in_profile"]}
    assert not referenced & without
    assert without | referenced <= orders  # and the orders of the customers they pull
    assert {1, 2, 3} <= ids(rows, plan, "pgclone_ref_audit")


def test_a_cut_key_is_null_where_it_references_a_row_left_out(settings, linked, test_database_name):
    """Customers pull their last order; cut, the order stays out and the key is
    NULL, but where the order is kept anyway. A raw table whose only link to the
    subset is a cut key keeps every row, with the key NULL where the order is out."""
    first = linked["orders"][3]  # customer 3's: its last order is another one
    root = {"testapp.Order": {"where": f"id = {first.pk}"}}
    plan, rows = kept(settings, {"subset": root})
    pulled = ids(rows, plan, "testapp_order")
    assert len(pulled) > 1  # last orders (and the customers of those…)
    cut = ["testapp.Customer.last_order", {"table": "public.pgclone_ref_log.order_id"}]
    plan, rows = kept(settings, {"subset": root, "null_keys": cut})
    orders = ids(rows, plan, "testapp_order")
    assert first.pk in orders and orders < pulled
    last = {c["id"]: c["last_order_id"] for c in columns(rows, plan, "testapp_customer")}
    assert last[first.customer_id] is None
    assert set(last.values()) <= orders | {None}
    log = columns(rows, plan, "pgclone_ref_log")
    assert len(log) == int(psql("SELECT count(*) FROM pgclone_ref_log", test_database_name))
    assert {row["order_id"] for row in log} <= orders | {None}
    assert {row["total"] for row in log} == {row["id"] for row in log}  # as it was
    with scratch_database() as copy:  # the constraints hold with the keys NULL
        load_into(plan, test_database_name, copy)


def audit(column: str) -> dict:
    return {"from_table": column, "to": "testapp.Order"}


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"references": [audit("public.pgclone_nope.x")]},
            "the table public.pgclone_nope is not in the database",
        ),
        (
            {"references": [audit("public.pgclone_ref_audit.nope")]},
            "public.pgclone_ref_audit has no column 'nope'; its columns are id, customer_id",
        ),
        (
            {"references": [audit("public.pgclone_ref_audit.happened")]},
            "date and bigint are of types that don't compare",
        ),
        (
            {"references": [audit("public.pgclone_ref_audit.order_ref->x")]},
            "order_ref is bigint, not JSON",
        ),
        (
            {"null_keys": [{"table": "public.pgclone_ref_audit.order_ref"}]},
            "the database has no foreign key on order_ref",
        ),
        (
            {"null_keys": [{"table": "public.pgclone_ref_audit.customer_id"}]},
            "customer_id is NOT NULL in the database",
        ),
    ],
)  # fmt: skip
def test_declarations_the_database_contradicts_are_refused_when_the_plan_is_made(
    settings, linked, config, message
):
    with pytest.raises(ConfigurationError, match=message):
        plan_of(settings, {"subset": {"testapp.Order": {"percent": 10}}, **config})


REFS_CONFIG = {
    "subset": {"testapp.Order": {"where": "id % 10 = 1"}},
    "references": [
        {"from_table": "public.pgclone_ref_audit.order_ref", "to": "testapp.Order"},
        {"from": "testapp.Customer.profile->order", "to": "testapp.Order"},
    ],
    "null_keys": ["testapp.Customer.last_order", {"table": "public.pgclone_ref_log.order_id"}],
}


@pytest.fixture(scope="module")
def refs_worker(tmp_path_factory, test_database_name, moto_server) -> Iterator[Any]:
    queue = own_queue("refs")
    env = {
        "PGCLONE_TEST_QUEUE": queue,
        "PGCLONE_TEST_DUMP_CONFIGS": json.dumps({"refs": REFS_CONFIG}),
    }
    log = tmp_path_factory.mktemp("refs-worker") / "worker.log"
    worker = start_worker(test_database_name, log, moto=moto_server, queue=queue, env=env)
    worker.env = env
    yield worker
    stop_worker(worker)


def test_a_dump_following_references_restores_with_every_constraint(
    refs_worker, pgclone_cli, local_location, target, linked, test_database_name
):
    """pg_restore makes the foreign keys after the rows: any kept row whose key
    references a row left out would fail it."""
    run = {"location": local_location, "env": refs_worker.env}
    made = pgclone_cli("dump", "--config", "refs", "--wait", **run)
    assert made.returncode == 0, made.stdout + made.stderr
    key = Job.objects.filter(kind=Job.Kind.DUMP).latest("created_at").dump_key
    restored = pgclone_cli("restore", key, "--database", "target", "--wait", **run)
    assert restored.returncode == 0, restored.stdout + restored.stderr

    orders = set(psql("SELECT string_agg(id::text, ' ') FROM testapp_order", target).split())
    assert str(linked["in_profile"][0].pk) in orders  # pulled by a kept customer's JSON
    # the audit rows reference kept customers (up): filtered by their references,
    # they pull nothing
    audit = psql(
        "SELECT string_agg(coalesce(order_ref::text, '-'), ' ') FROM pgclone_ref_audit", target
    )
    assert audit and set(audit.split()) <= orders | {"-"}
    notes = psql(
        "SELECT count(*) FILTER (WHERE object_id NOT IN "
        "(SELECT id::text FROM testapp_order)), count(*) FROM testapp_note n "
        "JOIN django_content_type t ON t.id = n.content_type_id WHERE t.model = 'order'",
        target,
    )
    assert notes == f"0|{len(orders)}"
    log = psql(
        "SELECT count(*), count(order_id), count(*) FILTER (WHERE order_id <> total) "
        "FROM pgclone_ref_log",
        target,
    )
    total, linked_rows, changed = map(int, log.split("|"))
    assert total == int(psql("SELECT count(*) FROM pgclone_ref_log", test_database_name))
    assert 0 < linked_rows < total and changed == 0
