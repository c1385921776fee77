"""The PostgreSQL driver of pgclone's own connections: the one Django uses.

Django picks psycopg (3) when it is installed, psycopg2 otherwise; so does
pgclone, so that a project needs only the driver it chose. The two share
their ``sql`` composition API and their ``errors`` classes; the few calls
that differ (connecting, the backend's pid, COPY) are here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Protocol

from django.db.backends.postgresql.psycopg_any import is_psycopg3

if is_psycopg3:
    import psycopg as _driver
    from psycopg import errors, sql
else:
    import psycopg2 as _driver
    from psycopg2 import errors, sql

COPY_SIZE = 256 * 1024
NAME = "psycopg" if is_psycopg3 else "psycopg2"
VERSION = _driver.__version__.split()[0]
Error = _driver.Error
OperationalError = _driver.OperationalError
InterfaceError = _driver.InterfaceError

__all__ = [
    "NAME",
    "VERSION",
    "Connection",
    "Cursor",
    "Error",
    "InterfaceError",
    "OperationalError",
    "backend_pid",
    "connect",
    "copy_from",
    "copy_in",
    "copy_out",
    "copy_table",
    "errors",
    "sql",
    "take_notifies",
]


class Cursor(Protocol):
    """What pgclone uses of a cursor, psycopg's or psycopg2's (a context manager)."""

    rowcount: int

    def execute(self, query: Any, params: Sequence[Any] | None = None) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __enter__(self) -> Cursor: ...
    def __exit__(self, *exc: object) -> Any: ...


class Connection(Protocol):
    """What pgclone uses of a connection, psycopg's or psycopg2's: autocommit
    sessions (:func:`connect`), cursors, and closing (a context manager)."""

    autocommit: bool

    def cursor(self) -> Cursor: ...
    def close(self) -> None: ...
    def __enter__(self) -> Connection: ...
    def __exit__(self, *exc: object) -> Any: ...


def connect(**kwargs: Any) -> Connection:
    """A connection in autocommit mode (libpq keywords: dbname, host, user…)."""
    connection = _driver.connect(**kwargs)
    connection.autocommit = True
    return connection


def backend_pid(connection: Connection) -> int:
    if is_psycopg3:
        return connection.info.backend_pid
    return connection.get_backend_pid()


def take_notifies(connection: Connection) -> None:
    """Read what the server sent an idle ``connection`` (without blocking) and
    forget the notifications received. Raises the driver's error once the
    session has ended."""
    if is_psycopg3:
        pgconn = connection.pgconn
        pgconn.consume_input()
        while pgconn.notifies() is not None:
            pass
        return
    connection.poll()
    connection.notifies.clear()


def copy_table(source: Connection, target: Connection, copy_out: Any, copy_in: Any) -> int:
    """COPY rows out of one connection and into another; returns the rows copied."""
    buffer = io.BytesIO()
    with source.cursor() as cursor:
        if is_psycopg3:
            with cursor.copy(copy_out) as copy:
                for data in copy:
                    buffer.write(data)
        else:
            cursor.copy_expert(copy_out, buffer)
    with target.cursor() as cursor:
        if is_psycopg3:
            with cursor.copy(copy_in) as copy:
                copy.write(buffer.getvalue())
        else:
            buffer.seek(0)
            cursor.copy_expert(copy_in, buffer)
        return cursor.rowcount


def copy_in(cursor: Cursor, statement: Any, data: bytes) -> None:
    """COPY … FROM STDIN of ``data``: values that never appear in any statement's text."""
    if is_psycopg3:
        with cursor.copy(statement) as copy:
            copy.write(data)
    else:
        cursor.copy_expert(statement, io.BytesIO(data))


class _Writable:
    """A file-like end for psycopg2's copy_expert, handing each piece to ``write``."""

    def __init__(self, write: Any) -> None:
        self.write = write


def copy_out(cursor: Cursor, statement: Any, write: Any) -> int:
    """COPY … TO STDOUT, each piece of its output handed to ``write``; returns the rows."""
    if is_psycopg3:
        with cursor.copy(statement) as copy:
            for data in copy:
                write(bytes(data))
    else:
        cursor.copy_expert(statement, _Writable(write), size=COPY_SIZE)
    return cursor.rowcount


def copy_from(cursor: Cursor, statement: Any, source: Any) -> int:
    """COPY … FROM STDIN of what a readable holds, read in pieces; returns the rows."""
    if is_psycopg3:
        with cursor.copy(statement) as copy:
            while data := source.read(COPY_SIZE):
                copy.write(data)
    else:
        cursor.copy_expert(statement, source, size=COPY_SIZE)
    return cursor.rowcount
