"""The bench's own PostgreSQL connections: creating, dropping and building databases.

These are the bench's, not pgclone's: psycopg2 on the server the environment
names (``PGHOST``, ``PGPORT``, ``PGUSER``), no Django involved.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import psycopg2
from psycopg2 import sql

from bench import schema
from bench.harness import log

PG = {
    "host": os.environ.get("PGHOST", "127.0.0.1"),
    "port": os.environ.get("PGPORT", "5432"),
    "user": os.environ.get("PGUSER", "postgres"),
}


def connect(dbname: str = "postgres") -> Any:
    conn = psycopg2.connect(dbname=dbname, connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


def execute(statement: Any, dbname: str = "postgres") -> list[tuple]:
    """Run one statement on its own connection; its rows, if it returns any."""
    with contextlib.closing(connect(dbname)) as conn, conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchall() if cur.description else []


def drop_database(name: str) -> None:
    execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_database(name: str, template: str | None = None) -> None:
    """A new, empty database, or a file copy of ``template``; one left by an earlier
    run under the same name is dropped first."""
    drop_database(name)
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
    execute(statement)


def database_size(name: str) -> int:
    return execute(sql.SQL("SELECT pg_database_size({})").format(sql.Literal(name)))[0][0]


def server_version() -> str:
    return execute("SHOW server_version")[0][0]


def pg_env() -> dict[str, str]:
    """This process's environment with the server made explicit, for the tools it runs."""
    return {**os.environ, "PGHOST": PG["host"], "PGPORT": PG["port"], "PGUSER": PG["user"]}


def _fill(name: str, statements: list[str], errors: list[BaseException]) -> None:
    """Run one session's share of the filling; a failure is kept for the caller."""
    try:
        with contextlib.closing(connect(name)) as conn, conn.cursor() as cur:
            cur.execute("SET synchronous_commit = off")
            for statement in statements:
                cur.execute(statement)
    except BaseException as exc:
        errors.append(exc)


def build_database(name: str, size: int, shape: str = "shop") -> dict[str, Any]:
    """Create ``name`` and fill it to about ``size`` bytes, server-side, its
    tables sized as ``schema.SHAPES[shape]`` says.

    The tables are filled by concurrent sessions (``schema.fill_statements``
    groups the work), then indexed, as a restore would.
    """
    shaped = schema.SHAPES[shape]
    units = max((size - schema.EMPTY_DATABASE_BYTES) // shaped.bytes_per_unit, 500)
    started = time.perf_counter()
    create_database(name)
    execute(schema.TABLES, name)
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_fill, args=(name, group, errors))
        for group in schema.fill_statements(units, shaped)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    with contextlib.closing(connect(name)) as conn, conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '256MB'")
        for statement in schema.INDEXES:
            cur.execute(statement)
        cur.execute("SELECT sum(n_live_tup)::bigint FROM pg_stat_user_tables")
        rows = cur.fetchone()[0]
        cur.execute(
            "SELECT max(pg_total_relation_size(relid))::float8 "
            "/ sum(pg_total_relation_size(relid)) FROM pg_stat_user_tables"
        )
        largest_share = cur.fetchone()[0]
    built = {
        "name": name,
        "units": units,
        "shape": shape,
        "rows": rows,
        "largest_table_share": round(largest_share, 3),
        "bytes": database_size(name),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    log(
        f"built {name}: {rows} rows, {built['bytes'] / 1024**2:.0f} MB in {built['build_seconds']}s"
    )
    return built
