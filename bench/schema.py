# ruff: noqa: S608 - the SQL is built from integers and a fixed vocabulary only
"""The bench database: a shop's tables, built server-side with generate_series.

Text mixes words from a small vocabulary (compressible, like prose) with md5
hex (like tokens and ids, barely compressible); numbers and timestamps are
random. ``units`` is the number of orders; every other table scales with it.
A shape (``SHAPES``) says how many events there are per order: one in the
shop, ten where one table, the event log, holds most of the data.
"""

from __future__ import annotations

from dataclasses import dataclass

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "red",
    "green",
    "blue",
    "yellow",
    "small",
    "large",
    "quick",
    "lazy",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "dog",
    "order",
    "shipped",
    "paid",
    "pending",
    "returned",
    "cotton",
    "wool",
    "steel",
    "glass",
    "paper",
    "wooden",
]
# Bytes on disk (tables + indexes) per unit, and of an empty database, measured
# on PostgreSQL 15: order items 349, events 275, orders 243, customers 31, products 6.
BYTES_PER_UNIT = 900
EVENT_BYTES = 275
EMPTY_DATABASE_BYTES = 7_500_000


@dataclass(frozen=True)
class Shape:
    """How the bench database's bytes are shared between its tables."""

    events_per_unit: int

    @property
    def bytes_per_unit(self) -> int:
        return BYTES_PER_UNIT + (self.events_per_unit - 1) * EVENT_BYTES


SHAPES = {
    "shop": Shape(events_per_unit=1),
    # events ~81% of the bytes: a restore that loads a table in one session
    # (pg_restore -j) waits for that table whatever its jobs.
    "one_big_table": Shape(events_per_unit=10),
}


def _word(_: str = "") -> str:
    return f"(w)[1 + floor(random() * {len(WORDS)})::int]"


def _words(count: int) -> str:
    return " || ' ' || ".join(_word(str(i)) for i in range(count))


_VOCAB = "(SELECT ARRAY[" + ", ".join(f"'{w}'" for w in WORDS) + "] AS w) AS vocab"

TABLES = """
CREATE TABLE customers (
    id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, country char(2),
    created_at timestamptz NOT NULL, profile jsonb NOT NULL);
CREATE TABLE products (
    id bigint PRIMARY KEY, sku text NOT NULL, title text NOT NULL, description text,
    price numeric(12, 2) NOT NULL, attributes jsonb);
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer_id bigint NOT NULL, created_at timestamptz NOT NULL,
    status text NOT NULL, total numeric(12, 2) NOT NULL, shipping jsonb);
CREATE TABLE order_items (
    id bigint PRIMARY KEY, order_id bigint NOT NULL, product_id bigint NOT NULL,
    quantity integer NOT NULL, unit_price numeric(12, 2) NOT NULL, discount numeric(5, 2));
CREATE TABLE events (
    id bigint PRIMARY KEY, occurred_at timestamptz NOT NULL, kind text NOT NULL,
    customer_id bigint, payload jsonb NOT NULL, note text);
"""


def fill_statements(units: int, shape: Shape = SHAPES["shop"]) -> list[list[str]]:
    """Groups of INSERTs; the groups are independent and can run concurrently
    (a shape with many events has them split between the two)."""
    customers = max(units // 10, 10)
    products = max(units // 100, 10)
    items = units * 3
    events = units * shape.events_per_unit
    half = events // 2 if shape.events_per_unit > 1 else 0
    return [
        [
            f"""INSERT INTO customers SELECT g,
                initcap({_word("a")}) || ' ' || chr(65 + (g % 26)::int) || '. '
                    || initcap({_word("b")}),
                'user' || g || '@' || left(md5(g::text), 8) || '.example.com',
                (ARRAY['DE','FR','US','GB','NL','ES','IT','PL'])[1 + floor(random() * 8)::int],
                now() - random() * interval '1000 days',
                jsonb_build_object('newsletter', random() < 0.3,
                    'score', round((random() * 100)::numeric, 2),
                    'tags', jsonb_build_array({_word("c")}, {_word("d")}),
                    'token', md5(random()::text))
              FROM generate_series(1, {customers}) AS g, {_VOCAB}""",
            f"""INSERT INTO products SELECT g, 'SKU-' || upper(left(md5(g::text), 10)),
                initcap({_words(3)}),
                {_words(12)} || '. ' || md5(random()::text) || ' ' || {_words(8)},
                round((random() * 500 + 1)::numeric, 2),
                jsonb_build_object('color', {_word("e")}, 'weight_g', floor(random() * 5000)::int,
                    'material', {_word("f")})
              FROM generate_series(1, {products}) AS g, {_VOCAB}""",
            f"""INSERT INTO orders SELECT g, 1 + floor(random() * {customers})::bigint,
                now() - random() * interval '1000 days',
                (ARRAY['pending','paid','shipped','returned'])[1 + floor(random() * 4)::int],
                round((random() * 1000)::numeric, 2),
                jsonb_build_object(
                    'street', floor(random() * 300)::int || ' ' || initcap({_words(2)}),
                    'zip', lpad(floor(random() * 99999)::int::text, 5, '0'),
                    'city', initcap({_word("g")}), 'tracking', md5(random()::text))
              FROM generate_series(1, {units}) AS g, {_VOCAB}""",
            *([_events(1, half, customers)] if half else []),
        ],
        [
            f"""INSERT INTO order_items SELECT g, 1 + (g - 1) / 3,
                1 + floor(random() * {products})::bigint,
                1 + floor(random() * 5)::int, round((random() * 500 + 1)::numeric, 2),
                CASE WHEN random() < 0.2 THEN round((random() * 30)::numeric, 2) END
              FROM generate_series(1, {items}) AS g""",
            _events(half + 1, events, customers),
        ],
    ]


def _events(first: int, last: int, customers: int) -> str:
    return f"""INSERT INTO events SELECT g, now() - random() * interval '365 days',
                (ARRAY['view','click','cart','checkout','login'])[1 + floor(random() * 5)::int],
                1 + floor(random() * {customers})::bigint,
                jsonb_build_object('session', md5(random()::text),
                    'path', '/' || {_word("h")} || '/' || {_word("i")},
                    'agent', (ARRAY['Mozilla/5.0 (X11; Linux x86_64)', 'Mozilla/5.0 (iPhone)',
                        'curl/8.5.0'])[1 + floor(random() * 3)::int],
                    'ms', floor(random() * 2000)::int),
                CASE WHEN random() < 0.5 THEN {_words(6)} END
              FROM generate_series({first}, {last}) AS g, {_VOCAB}"""


INDEXES = [
    "CREATE UNIQUE INDEX customers_email ON customers (email)",
    "CREATE UNIQUE INDEX products_sku ON products (sku)",
    "CREATE INDEX orders_customer ON orders (customer_id)",
    "CREATE INDEX orders_created ON orders (created_at)",
    "CREATE INDEX order_items_order ON order_items (order_id)",
    "CREATE INDEX order_items_product ON order_items (product_id)",
    "CREATE INDEX events_kind_time ON events (kind, occurred_at)",
    "CREATE INDEX products_attributes ON products USING gin (attributes)",
    "ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers",
    "ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders",
    "ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products",
    # Every event's customer_id is drawn from 1..customers, so this key holds;
    # it makes events follow their customers in the sharing round's subset.
    "ALTER TABLE events ADD FOREIGN KEY (customer_id) REFERENCES customers",
    "VACUUM ANALYZE",
]
