"""Scrubbed, subset plans run on the real server: what a dump of them would hold."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest
from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.models import User

from pgclone import configs
from pgclone.exceptions import ConfigurationError
from pgclone.pg import catalog, driver, postgres, search_path, table_counts
from pgclone.pg.driver import sql
from pgclone.sharing import exclusions, plans, scrub, subset
from tests import pg
from tests.helpers import psql, scratch_database
from tests.testapp.models import Address, Customer, Order, OrderItem, Product, Tag

pytestmark = pytest.mark.django_db(transaction=True)

CUSTOMERS, ORDERS = 200, 1000
SAFE = {
    "scrub": {
        "testapp.Customer": {
            "name": "name",
            "email": "email",
            "phone": "null",
            "ip": "ip",
            "notes": {"sql": "left(md5({column}), 8)"},
            "profile": [
                {"rule": "email", "path": ["contact", "email"]},
                {"rule": "phone", "path": ["contact", "phone"]},
            ],
        },
        "testapp.Address": {"street": "address"},
    },
    "subset": {"testapp.Order": {"percent": 10}},
}


def profile(i: int) -> dict:
    return {"contact": {"email": f"person{i}@real.example", "phone": f"0770{i:04d}"}, "vip": i % 2}


@pytest.fixture
def shop(test_database_name: str) -> dict[str, list]:
    """200 customers (some referred by others, a few with a last order), 1000
    orders of two items each, tags on some orders, an address per customer."""
    products = Product.objects.bulk_create(Product(name=f"product {i}") for i in range(20))
    tags = Tag.objects.bulk_create(Tag(name=f"tag {i}") for i in range(5))
    customers = Customer.objects.bulk_create(
        Customer(
            name=f"Real Person {i}",
            email=f"person{i}@real.example",
            phone=None if i % 4 == 0 else f"+44 7700 900{i:03d}",
            notes=f"likes thing {i}",
            profile=None if i % 5 == 0 else profile(i),
            ip=f"192.0.2.{i % 250}",
        )
        for i in range(CUSTOMERS)
    )
    for i, customer in enumerate(customers[1:], 1):  # chains of referrals, 10 long
        if i % 10:
            customer.referred_by = customers[i - 1]
    Customer.objects.bulk_update(customers, ["referred_by"])
    created = datetime(2026, 1, 1, tzinfo=UTC)
    orders = Order.objects.bulk_create(
        Order(customer=customers[i % CUSTOMERS], created=created) for i in range(ORDERS)
    )
    OrderItem.objects.bulk_create(
        OrderItem(order=order, product=products[(i + k) % 20])
        for i, order in enumerate(orders)
        for k in range(2)
    )
    Order.tags.through.objects.bulk_create(
        Order.tags.through(order=order, tag=tags[i % 5]) for i, order in enumerate(orders[::3])
    )
    for customer in customers[:10]:  # a cycle: customer -> order -> customer
        customer.last_order = orders[-1 - customer.pk % 50]
    Customer.objects.bulk_update(customers[:10], ["last_order"])
    Address.objects.bulk_create(Address(customer=c, street=f"{c.pk} Real Road") for c in customers)
    return {"customers": customers, "orders": orders}


def plan_of(settings, config: dict, exclude: list = ()) -> subset.Plan:
    settings.PGCLONE_DUMP_CONFIGS = {"safe": config}
    conn = postgres.conn_info()
    path = search_path.project_path(conn)
    with postgres.connect(conn) as connection, connection.cursor() as cursor:
        return subset.make_plan(
            cursor, configs.dump_config("safe").sharing, path=path, exclude=list(exclude)
        )


def columns(rows: dict, plan: subset.Plan, table: str) -> list[dict]:
    names = next(t.columns for t in plan.tables if t.name == table)
    return [dict(zip(names, row, strict=True)) for row in rows[f"public.{table}"]]


@pytest.mark.matrix  # COPY, parameters and composition differ by driver
def test_scrubbed_values_are_keyed_deterministic_unique_and_keep_nulls(settings, shop):
    User.objects.create(username="someone", email="person3@real.example")
    rules = {**SAFE["scrub"], "auth.User": {"email": "email", "username": "hash"}}
    plan = plan_of(settings, {"scrub": rules})
    first = plans.run_plan(postgres.conn_info(), plan, key="key one")
    again = plans.run_plan(postgres.conn_info(), plan, key="key one")
    other = plans.run_plan(postgres.conn_info(), plan, key="key two")
    assert first == again
    customers = columns(first, plan, "testapp_customer")
    emails = [c["email"] for c in customers]
    assert len(set(emails)) == CUSTOMERS
    assert all(e.startswith("u-") and e.endswith("@example.invalid") for e in emails)
    assert emails != [c["email"] for c in columns(other, plan, "testapp_customer")]
    assert {c["phone"] for c in customers} == {None}
    profiles = [c["profile"] for c in customers]
    assert sum(p is None for p in profiles) == CUSTOMERS // 5
    # The same email gets the same output wherever it is: column or JSON key.
    for customer in customers:
        if customer["profile"] is not None:
            assert customer["profile"]["contact"]["email"] == customer["email"]
            assert customer["profile"]["contact"]["phone"].startswith("+1 555 ")
            assert customer["profile"]["vip"] in (0, 1)
    # The same email in another table (auth_user) gets the same output too.
    (user,) = columns(first, plan, "auth_user")
    assert user["email"] == customers[3]["email"] and user["username"] != "someone"
    written = repr(first)
    for original in ("Real Person", "real.example", "Real Road", "likes thing", "192.0.2"):
        assert original not in written
    assert len(columns(first, plan, "testapp_order")) == ORDERS  # no subset: every row


@pytest.mark.matrix  # COPY, parameters and composition differ by driver
def test_a_percent_subset_keeps_every_reference_whole_and_restores_with_constraints(
    settings, shop, test_database_name
):
    plan = plan_of(settings, SAFE, exclude=["testapp_secret"])  # exclude_models beside it
    kinds = {t.name: t.kind for t in plan.tables}
    assert "testapp_secret" not in kinds
    assert kinds["testapp_order"] == "root" and kinds["testapp_orderitem"] == "down"
    assert kinds["testapp_order_tags"] == "down" and kinds["testapp_tag"] == "up"
    assert kinds["testapp_customer"] == "up" and kinds["testapp_address"] == "filtered"
    assert kinds["testapp_author"] == "whole" and kinds["testapp_book_tags"] == "filtered"

    with scratch_database() as copy:
        counts = load_into(plan, test_database_name, copy)
        kept_orders = int(psql("SELECT count(*) FROM testapp_order", copy))

    assert ORDERS * 0.08 <= kept_orders <= ORDERS * 0.12, counts
    assert counts["public.testapp_orderitem"] == 2 * kept_orders
    assert 0 < counts["public.testapp_customer"] < CUSTOMERS


def load_into(plan: subset.Plan, source: str, target: str) -> dict[str, int]:
    """The plan's rows in a copy of the schema; the constraints are made afterwards,
    as pg_restore makes them, and fail on any row that breaks one."""
    sections = {}
    for section in ("pre-data", "post-data"):
        sections[section] = subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", f"--section={section}", source],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    load = [
        "psql",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-X",
        "-q",
        "-o",
        "/dev/null",
        "-v",
        "ON_ERROR_STOP=1",
    ]
    subprocess.run([*load, "-d", target], input=sections["pre-data"], check=True, text=True)
    with table_counts.snapshot_transaction(postgres.conn_info()) as cursor:
        plans.prepare(cursor, plan)
        counts = plans.kept(cursor, plan)
        into = pg.connect(target, autocommit=True)
        try:
            for table in plan.tables:
                copy_in = driver.sql.SQL("COPY {} ({}) FROM STDIN").format(
                    driver.sql.Identifier(table.schema, table.name),
                    driver.sql.SQL(", ").join(map(driver.sql.Identifier, table.columns)),
                )
                driver.copy_table(cursor.connection, into, table.copy_statement(), copy_in)
        finally:
            into.close()
    done = subprocess.run(
        [*load, "-d", target], input=sections["post-data"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return counts


@pytest.fixture
def raw_tables(test_database_name: str) -> Iterator[str]:
    """Tables Django knows nothing about: a two-column key, and a reference to orders."""
    psql(
        "CREATE TABLE pgclone_raw_parent (a int, b int, label text, PRIMARY KEY (a, b));"
        "CREATE TABLE pgclone_raw_child (id int PRIMARY KEY, a int, b int, "
        "order_id bigint NOT NULL REFERENCES testapp_order (id), "
        "FOREIGN KEY (a, b) REFERENCES pgclone_raw_parent);"
        "INSERT INTO pgclone_raw_parent SELECT i, i + 1, 'p' || i FROM generate_series(1, 50) i;"
        "INSERT INTO pgclone_raw_child SELECT o.id, o.id % 50 + 1, o.id % 50 + 2, o.id "
        "FROM testapp_order o;",
        test_database_name,
    )
    yield test_database_name
    psql("DROP TABLE pgclone_raw_child, pgclone_raw_parent", test_database_name)


def test_a_subset_reaching_a_key_into_a_partitioned_table_is_refused(
    settings, shop, test_database_name
):
    """PostgreSQL keeps a foreign key into a partitioned table as one key per
    partition: followed as they are, no row would reference every one of them."""
    psql(
        "CREATE TABLE pgclone_part (id int PRIMARY KEY) PARTITION BY RANGE (id);"
        "CREATE TABLE pgclone_part_low PARTITION OF pgclone_part FOR VALUES FROM (0) TO (100);"
        "CREATE TABLE pgclone_part_high PARTITION OF pgclone_part FOR VALUES FROM (100) TO (200);"
        "CREATE TABLE pgclone_part_user (id int PRIMARY KEY, part_id int REFERENCES pgclone_part, "
        "order_id bigint NOT NULL REFERENCES testapp_order (id))",
        test_database_name,
    )
    try:
        with pytest.raises(ConfigurationError, match="references a partitioned table"):
            plan_of(settings, {"subset": {"testapp.Order": {"percent": 10}}})
        plan_of(settings, {"scrub": {"testapp.Customer": {"name": "name"}}})  # no subset: fine
    finally:
        psql("DROP TABLE pgclone_part_user, pgclone_part", test_database_name)


def test_a_partitioned_model_is_refused_for_scrub_and_subset(settings, test_database_name):
    psql(
        "CREATE TABLE pgclone_part_reading (id bigint, taken date, value text) "
        "PARTITION BY RANGE (taken);"
        "CREATE TABLE pgclone_part_reading_2026 PARTITION OF pgclone_part_reading "
        "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
        "INSERT INTO pgclone_part_reading VALUES (1, '2026-03-01', 'secret')",
        test_database_name,
    )
    try:
        for config in (
            {"scrub": {"testapp.Reading": {"value": "text"}}},
            {"subset": {"testapp.Reading": {"percent": 10}}},
        ):
            with pytest.raises(ConfigurationError, match="Reading is partitioned"):
                plan_of(settings, config)
    finally:
        psql("DROP TABLE pgclone_part_reading", test_database_name)


def test_kept_keys_are_looked_up_by_index_only_where_the_planner_can_use_one(
    test_database_name,
):
    """= ANY(ARRAY(…)) of kept keys with no index the planner takes for `=` on the
    column would compare every row with every key: such keys are hashed. So are
    array keys, whose ARRAY(…) would be two-dimensional."""
    psql(
        "CREATE TABLE pgclone_ix_parent (id text PRIMARY KEY);"
        "CREATE TABLE pgclone_ix_arrays (id int[] PRIMARY KEY);"
        "CREATE TABLE pgclone_ix_array (p int[] REFERENCES pgclone_ix_arrays);"
        "CREATE INDEX ON pgclone_ix_array (p);"
        + "".join(
            f"CREATE TABLE pgclone_ix_{name} (p text REFERENCES pgclone_ix_parent);{index}"
            for name, index in [
                ("plain", "CREATE INDEX ON pgclone_ix_plain (p);"),
                ("pattern", "CREATE INDEX ON pgclone_ix_pattern (p text_pattern_ops);"),
                ("collated", 'CREATE INDEX ON pgclone_ix_collated (p COLLATE "C");'),
                ("partial", "CREATE INDEX ON pgclone_ix_partial (p) WHERE p <> '';"),
                ("hashed", "CREATE INDEX ON pgclone_ix_hashed USING hash (p);"),
                ("none", ""),
            ]
        ),
        test_database_name,
    )
    try:
        with postgres.connect(postgres.conn_info()) as connection, connection.cursor() as cursor:
            found = catalog.read(cursor)
        names = {oid: table.name for oid, table in found.tables.items()}
        lookups = {
            names[fk.child]: fk.lookup
            for fk in found.foreign_keys
            if names[fk.parent] in ("pgclone_ix_parent", "pgclone_ix_arrays", "testapp_order")
        }
    finally:
        psql(
            "DROP TABLE pgclone_ix_plain, pgclone_ix_pattern, pgclone_ix_collated, "
            "pgclone_ix_partial, pgclone_ix_hashed, pgclone_ix_none, pgclone_ix_parent, "
            "pgclone_ix_array, pgclone_ix_arrays",
            test_database_name,
        )
    assert lookups["pgclone_ix_plain"] and lookups["testapp_orderitem"]  # Django's index
    for name in ("pattern", "collated", "partial", "hashed", "none", "array"):
        assert not lookups[f"pgclone_ix_{name}"], name


def test_raw_sql_and_multi_column_foreign_keys_are_followed(settings, shop, raw_tables):
    plan = plan_of(settings, {"subset": {"testapp.Order": {"where": "id % 100 = 1"}}})
    kinds = {t.name: t.kind for t in plan.tables}
    assert kinds["pgclone_raw_child"] == "down" and kinds["pgclone_raw_parent"] == "up"
    with scratch_database() as copy:
        counts = load_into(plan, raw_tables, copy)
    assert counts["public.testapp_order"] >= ORDERS // 100
    assert counts["public.pgclone_raw_child"] == counts["public.testapp_order"]
    assert 0 < counts["public.pgclone_raw_parent"] < 50


def test_a_table_inheriting_from_a_scrubbed_one_is_scrubbed_and_its_rows_kept_apart(
    settings, shop, test_database_name
):
    """INHERITS: a query of the parent returns the heir's rows too. The parent's
    COPY must not (pg_dump writes them with the heir: they would be restored
    twice), and the heir's copy of the scrubbed column is scrubbed too."""
    psql(
        "CREATE TABLE pgclone_customer_archive () INHERITS (testapp_customer);"
        "INSERT INTO pgclone_customer_archive (id, name, email, phone, ip, notes, profile) "
        "SELECT 100000 + i, 'Archived Person', 'archived' || i || '@real.example', NULL, NULL, "
        "'', '{}' FROM generate_series(1, 5) i",
        test_database_name,
    )
    try:
        config = {
            "scrub": {"testapp.Customer": {"email": "email"}},
            "subset": {"testapp.Order": {"percent": 10}},
        }
        plan = plan_of(settings, config)
        rows = plans.run_plan(postgres.conn_info(), plan)
    finally:
        psql("DROP TABLE pgclone_customer_archive", test_database_name)
    archived = columns(rows, plan, "pgclone_customer_archive")
    assert sorted(c["id"] for c in archived) == [100001, 100002, 100003, 100004, 100005]
    # counted as COPY writes them (a trial restore compares), the heirs' rows apart
    counts = {(t.name, t.rows) for t in table_counts.count_database(postgres.conn_info())}
    assert ("testapp_customer", Customer.objects.filter(id__lt=100000).count()) in counts
    assert all(c["email"].endswith("@example.invalid") for c in archived)
    customers = columns(rows, plan, "testapp_customer")
    assert customers and max(c["id"] for c in customers) < 100000


def test_cycles_and_self_references_reach_a_fixed_point(settings, shop):
    # One root order: its customer, that customer's referrers up the chain, and
    # the last orders they point to (and those orders' customers…) come along.
    first = shop["orders"][9]
    plan = plan_of(settings, {"subset": {"testapp.Order": {"where": f"id = {first.pk}"}}})
    rows = plans.run_plan(postgres.conn_info(), plan)
    customers = {c["id"]: c for c in columns(rows, plan, "testapp_customer")}
    orders = {o["id"]: o for o in columns(rows, plan, "testapp_order")}
    assert first.pk in orders
    for customer in customers.values():
        assert customer["referred_by_id"] in (None, *customers)
        assert customer["last_order_id"] in (None, *orders)
    assert {o["customer_id"] for o in orders.values()} <= set(customers)
    assert len(customers) >= 10  # customer 9 was referred by 8, … by 0


def test_the_server_computes_the_same_keyed_digest_as_python(settings, shop):
    plan = plan_of(settings, {"scrub": {"testapp.Customer": {"notes": "hash"}}})
    rows = plans.run_plan(postgres.conn_info(), plan, key="a key")
    notes = [c["notes"] for c in columns(rows, plan, "testapp_customer")]
    assert scrub.keyed_digest("a key", "likes thing 0").hex() in notes


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"subset": {"testapp.Order": {"where": "no_such_column > 1"}}},
         'The subset of testapp.Order is not valid SQL for public.testapp_order: column '
         '"no_such_column" does not exist'),
        ({"subset": {"testapp.Order": {"where": "id < 0"}}},
         "The subset root testapp.Order has no rows to keep"),
        ({"scrub": {"testapp.Customer": {"phone": {"sql": "repeat({column}, 10)"}}}},
         "The sql rule of public.testapp_customer.phone writes values longer than the "
         "column's 30 characters"),
        ({"scrub": {"testapp.Customer": {"email": {"sql": "left({column}, 1)"}}}},
         "gives equal values to distinct rows, and the column is unique"),
        ({"scrub": {"testapp.Customer": {"ip": {"sql": "'not an ip ' || {column}"}}}},
         'The sql rule of public.testapp_customer.ip fails: invalid input syntax for type inet'),
        # pgclone's sessions search pg_catalog alone: the project's names need their schema
        ({"subset": {"testapp.Order": {"where": "id IN (SELECT id FROM testapp_customer)"}}},
         'relation "testapp_customer" does not exist. pgclone\'s sessions look up names in '
         "pg_catalog only, so that nothing planted in the database can run in them: name a "
         "table, or a function that is not PostgreSQL's own, with its schema"),
        ({"scrub": {"testapp.Customer": {"notes": {"sql": "shop_mask({column})"}}}},
         "The sql rule of public.testapp_customer.notes fails: function shop_mask(text) does "
         "not exist. pgclone's sessions look up names in pg_catalog only"),
    ],
)  # fmt: skip
def test_what_would_fail_a_dump_is_found_before_it_starts(settings, shop, config, message):
    psql(
        "CREATE FUNCTION public.shop_mask(value text) RETURNS text LANGUAGE sql "
        "AS $$ SELECT 'masked' $$",
        postgres.conn_info().name,
    )
    try:
        _refused_before_it_starts(settings, config, message)
    finally:
        psql("DROP FUNCTION public.shop_mask(text)", postgres.conn_info().name)


def _refused_before_it_starts(settings, config, message):
    plan = plan_of(settings, config)
    with table_counts.snapshot_transaction(postgres.conn_info()) as cursor:
        problems = plans.check(cursor, plan)
    assert len(problems) == 1 and message in problems[0], problems
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        plans.run_plan(postgres.conn_info(), plan)


@pytest.fixture
def ledger(test_database_name: str) -> Iterator[str]:
    """The legacy table of testapp.Ledger: a char(6) code and a numeric(5,2) amount."""
    psql(
        "CREATE TABLE pgclone_legacy_ledger (id bigint PRIMARY KEY, code char(6) NOT NULL, "
        "amount numeric(5,2) NOT NULL, memo text NOT NULL);"
        "INSERT INTO pgclone_legacy_ledger VALUES (1, 'ABC123', 999.99, 'paid 100%'), "
        "(2, 'XYZ789', 12.50, '')",
        test_database_name,
    )
    yield test_database_name
    psql("DROP TABLE pgclone_legacy_ledger", test_database_name)


def test_an_sql_rule_is_cast_to_the_declared_type_and_checked_against_it(settings, ledger):
    """An sql rule's output is cast to the column's declared type (numeric(5,2)
    overflows at the check, not at the restore), but for character types, whose
    cast would truncate: char(6) keeps its six characters (a cast to "character"
    would keep one). A % in a rule is the rule's own (modulo, LIKE)."""
    fine = {
        "code": {"sql": "lower({column})"},
        "memo": {"sql": "CASE WHEN {column} LIKE '%\\%' THEN 'percent' ELSE 'x' END"},
        "amount": {"sql": "{column} % 10"},
    }
    plan = plan_of(settings, {"scrub": {"testapp.Ledger": fine}})
    rows = plans.run_plan(postgres.conn_info(), plan)
    found = columns(rows, plan, "pgclone_legacy_ledger")
    assert [(r["code"], r["memo"], r["amount"]) for r in found] == [
        ("abc123", "percent", Decimal("9.99")),
        ("xyz789", "x", Decimal("2.50")),
    ]
    # what explicit casts cut or pad, cast without their length: the check or the restore says it
    psql(
        "CREATE TABLE pgclone_cast_types (a varchar(5)[], b char(3)[], c bit(8), d varbit(4), "
        "e numeric(5,2), f timestamp(0))",
        ledger,
    )
    try:
        with postgres.connect(postgres.conn_info()) as connection, connection.cursor() as cursor:
            found = catalog.read(cursor)
    finally:
        psql("DROP TABLE pgclone_cast_types", ledger)
    table = next(t for t in found.tables.values() if t.name == "pgclone_cast_types")
    assert {c.name: c.cast for c in table.columns} == {
        "a": "character varying[]", "b": "bpchar[]", "c": "bit varying", "d": "bit varying",
        "e": "numeric(5,2)", "f": "timestamp(0) without time zone",
    }  # fmt: skip
    failing = {
        "amount": ({"sql": "{column} * 100"}, "fails: numeric field overflow"),
        "memo": ({"sql": "nullif({column}, '')"}, "writes NULL, and the column is NOT NULL"),
        "code": ({"sql": "{column} || '+'"}, "longer than the column's 6 characters"),
    }
    for field, (rule, message) in failing.items():
        plan = plan_of(settings, {"scrub": {"testapp.Ledger": {field: rule}}})
        with table_counts.snapshot_transaction(postgres.conn_info()) as cursor:
            problems = plans.check(cursor, plan)
        assert len(problems) == 1 and message in problems[0], (field, problems)


def test_a_root_left_out_or_a_key_scrubbed_is_refused(settings, shop, test_database_name):
    excluded, _ = exclusions.excluded_tables(["testapp.Customer"])  # as a dump leaves them out
    with pytest.raises(ConfigurationError, match=r"testapp\.Order is left out of the dump"):
        plan_of(settings, SAFE, exclude=excluded)
    psql(
        "CREATE TABLE pgclone_raw_contact (email varchar(254) REFERENCES testapp_customer (email))",
        test_database_name,
    )
    try:
        with pytest.raises(ConfigurationError, match=r"\(public.testapp_customer.email\): the co"):
            plan_of(settings, {"scrub": {"testapp.Customer": {"email": "email"}}})
    finally:
        psql("DROP TABLE pgclone_raw_contact", test_database_name)


def test_many_to_many_follows_both_sides_and_a_sample_is_the_same_each_time(settings, shop):
    plan = plan_of(settings, {"subset": {"testapp.Tag": {"where": "name = 'tag 1'"}}})
    rows = plans.run_plan(postgres.conn_info(), plan)
    assert rows == plans.run_plan(postgres.conn_info(), plan)
    (tag,) = columns(rows, plan, "testapp_tag")
    links = columns(rows, plan, "testapp_order_tags")
    orders = {o["id"] for o in columns(rows, plan, "testapp_order")}
    assert links and {link["tag_id"] for link in links} == {tag["id"]}
    assert {link["order_id"] for link in links} <= orders
    # Books tagged with other tags lose those tags: the through table is filtered.
    assert columns(rows, plan, "testapp_book_tags") == []


@pytest.mark.matrix  # psycopg 3 can't bind SET TRANSACTION SNAPSHOT's id
def test_a_plan_reads_the_exported_snapshot_not_what_changed_since(settings, shop):
    plan = plan_of(settings, {"subset": {"testapp.Order": {"percent": 100}}})
    exporter = pg.connect(postgres.conn_info().name, autocommit=True)
    try:
        with exporter.cursor() as cursor:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
        later = Order.objects.create(customer=shop["customers"][0], created=datetime.now(UTC))
        rows = plans.run_plan(postgres.conn_info(), plan, snapshot=snapshot)
    finally:
        exporter.close()  # ends its transaction
    orders = {o["id"] for o in columns(rows, plan, "testapp_order")}
    assert len(orders) == ORDERS and later.pk not in orders


class Recording:
    """A cursor that remembers every statement and parameter it is given."""

    def __init__(self, cursor) -> None:
        self.cursor, self.sent = cursor, []

    def execute(self, statement, params=None):
        text = statement.as_string(self.cursor) if hasattr(statement, "as_string") else statement
        self.sent.append(f"{text} {params!r}")
        return self.cursor.execute(statement, params)

    def __getattr__(self, name):
        return getattr(self.cursor, name)


@pytest.mark.matrix  # COPY, parameters and composition differ by driver
def test_the_key_is_in_no_statement_or_parameter_the_session_is_sent(settings, shop):
    plan = plan_of(settings, SAFE)
    with table_counts.snapshot_transaction(postgres.conn_info()) as cursor:
        recording = Recording(cursor)
        plans.prepare(recording, plan, key="the key")
        cursor.execute("SELECT current_setting('pgclone.scrub_key')")
        assert cursor.fetchone()[0] == scrub.key_setting("the key")
    setting = scrub.key_setting("the key")
    assert recording.sent and not any(
        secret in sent for sent in recording.sent for secret in ("the key", setting[:32])
    )


@pytest.mark.parametrize("paths", [1, 2], ids=["one path (inline)", "two paths"])
def test_a_json_rule_changes_only_a_value_found_at_its_path(settings, test_database_name, paths):
    documents = [{"contact": ["not", "an", "object"]}, {"other": 1},
                 {"contact": {"email": None}}, {"contact": {"email": "a@b.example"}},
                 "a scalar", [{"contact": 1}],
                 {"contact": {"email": {"deep": "x@y.example"}}}]  # fmt: skip
    for i, document in enumerate(documents):
        Customer.objects.create(name="x", email=f"{i}@real.example", profile=document)
    rules = [{"rule": "email", "path": ["contact", "email"]}, {"rule": "null", "path": ["other"]}]
    plan = plan_of(settings, {"scrub": {"testapp.Customer": {"profile": rules[:paths]}}})
    rows = plans.run_plan(postgres.conn_info(), plan)
    found = [c["profile"] for c in columns(rows, plan, "testapp_customer")]
    other = {"other": None} if paths == 2 else documents[1]
    assert found[:3] == [documents[0], other, documents[2]]
    assert found[3]["contact"]["email"].endswith("@example.invalid")
    assert found[4:6] == documents[4:6]  # no object to look in: kept as it is
    assert re.fullmatch(r"u-[0-9a-f]{32}@example\.invalid", found[6]["contact"]["email"])


def test_a_column_read_by_a_unique_expression_index_stays_unique(
    settings, shop, test_database_name
):
    """unique(lower(name)): two customers named alike would both be "Alex Smith" else,
    and the restore's index would refuse the second."""
    index = "CREATE UNIQUE INDEX pgclone_test_lower_name ON testapp_customer (lower(name))"
    psql(index, test_database_name)
    try:
        plan = plan_of(settings, {"scrub": {"testapp.Customer": {"name": "name"}}})
        rows = plans.run_plan(postgres.conn_info(), plan)
    finally:
        psql("DROP INDEX pgclone_test_lower_name", test_database_name)
    names = [c["name"] for c in columns(rows, plan, "testapp_customer")]
    assert all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+-[0-9a-f]{16}", name) for name in names)
    assert len({name.lower() for name in names}) == CUSTOMERS


@pytest.mark.matrix
def test_every_rule_writes_values_that_fit_their_column(settings, shop):
    User.objects.create(username="someone", first_name="Some", last_name="One", email="s@o.ex",
                        password="pbkdf2_sha256$1$salt$hash")  # fmt: skip
    plan = plan_of(settings, {"scrub": {
        "testapp.Customer": {"name": "name", "email": "name", "phone": "email", "notes": "text",
                             "ip": "ip"},
        "auth.User": {"username": "first_name", "first_name": "first_name",
                      "last_name": "last_name", "password": "unusable_password", "email": "empty"},
        "testapp.Address": {"street": "address"},
        "testapp.Product": {"name": "hash"},
        "testapp.Tag": {"name": "phone"},
    }})  # fmt: skip
    rows = plans.run_plan(postgres.conn_info(), plan)
    customers = columns(rows, plan, "testapp_customer")
    shapes = {
        "name": r"[A-Z][a-z]+ [A-Z][a-z]+",
        "email": r"[A-Z][a-z]+ [A-Z][a-z]+-[0-9a-f]{16}",  # unique: a readable part and 16 hex
        "phone": r"u-[0-9a-f]{12}@example\.invalid",  # varchar(30): 12 hex digits fit
        "notes": r"text-[0-9a-f]{32}",
        "ip": r"10\.\d+\.\d+\.\d+",
    }
    for customer in customers:
        for name, shape in shapes.items():
            value = customer[name]
            assert value is None or re.fullmatch(shape, str(value)), (name, value)
    assert len({c["email"] for c in customers}) == CUSTOMERS
    (user,) = columns(rows, plan, "auth_user")
    assert re.fullmatch(r"[A-Z][a-z]+-[0-9a-f]{16}", user["username"])
    assert re.fullmatch(r"![0-9a-f]{40}", user["password"]) and user["email"] == ""
    assert not is_password_usable(user["password"])
    assert user["first_name"] != "Some" and user["last_name"] != "One"
    assert all(
        re.fullmatch(r"\d+ [A-Z][a-z]+ Street", a["street"])
        for a in columns(rows, plan, "testapp_address")
    )
    assert all(
        re.fullmatch(r"[0-9a-f]{64}", p["name"]) for p in columns(rows, plan, "testapp_product")
    )
    assert all(
        re.fullmatch(r"\+1 555 \d{7}", t["name"]) for t in columns(rows, plan, "testapp_tag")
    )


def test_each_rule_writes_what_its_definition_gives_for_the_keyed_digest():
    """Outputs are part of a dump's promise (the same value, the same output in
    every dump under one key, until RULES_VERSION changes): each rule's output,
    by the server, against what it is defined as, from the digest Python computes."""
    value, key = "person@réel.example", "a key"
    hexed = scrub.keyed_digest(key, value).hex()
    first = scrub.FIRST_NAMES[scrub.keyed_digest(key, value)[0] % 16]
    last = scrub.LAST_NAMES[scrub.keyed_digest(key, value)[1] % 16]
    an_id = "12345678-1234-5678-1234-567812345678"
    text, uuid = ("text", "text"), ("uuid", "uuid")
    cases = [  # rule, (kind, type), max length, unique, value, output
        ("email", text, None, False, value, f"u-{hexed[:32]}@example.invalid"),
        ("email", text, 40, True, value, f"u-{hexed[:22]}@example.invalid"),
        ("email", text, 27, False, value, f"u-{hexed[:9]}@example.invalid"),  # an odd count
        ("text", text, None, False, value, f"text-{hexed[:32]}"),
        ("hash", text, None, False, value, hexed[:64]),
        ("hash", uuid, None, True, an_id, str(UUID(scrub.keyed_digest(key, an_id).hex()[:32]))),
        ("unusable_password", text, None, False, value, f"!{hexed[:40]}"),
        ("first_name", text, None, True, value, f"{first}-{hexed[:16]}"),
        ("name", text, None, False, value, f"{first} {last}"),
    ]
    with table_counts.snapshot_transaction(postgres.conn_info(), None) as cursor:
        plans.set_key(cursor, key)
        for name, (kind, type_name), length, unique, value_in, expected in cases:
            column = scrub.Column("c", kind, type_name, length, unique=unique)
            rules = scrub.parse(name, "test")
            assert scrub.problem(rules, column) is None
            for given, output in ((value_in, expected), (None, None)):
                source = sql.SQL("(SELECT {}::{} AS c) AS s").format(
                    sql.Literal(given), sql.SQL(type_name)
                )
                rendered = scrub.render(rules, sql.SQL("s.c"), column)
                cursor.execute(sql.SQL("SELECT ({})::text FROM {}").format(rendered, source))
                assert cursor.fetchone()[0] == output, (name, type_name, length, unique, given)
        # At a JSON path: the value there replaced, the rest kept; no value there, no change.
        documents = [
            ({"a": {"b": value}, "c": 1}, {"a": {"b": hexed[:64]}, "c": 1}),
            ({"a": {"b": None}}, {"a": {"b": None}}),
            ({"c": 1}, {"c": 1}),
            (None, None),
        ]
        rules = scrub.parse({"rule": "hash", "path": ["a", "b"]}, "test")
        rendered = scrub.render(rules, sql.SQL("s.c"), scrub.Column("c", "json", "jsonb"))
        for document, expected in documents:
            given = None if document is None else json.dumps(document)
            source = sql.SQL("(SELECT {}::jsonb AS c) AS s").format(sql.Literal(given))
            cursor.execute(sql.SQL("SELECT ({})::text FROM {}").format(rendered, source))
            found = cursor.fetchone()[0]
            assert (None if found is None else json.loads(found)) == expected, document
