"""Connections of the tests' own, with whichever driver Django (and so pgclone) uses."""

from __future__ import annotations

from typing import Any

from pgclone.pg import driver

Error = driver.Error
OperationalError = driver.OperationalError
backend_pid = driver.backend_pid


def connect(dbname: str, *, autocommit: bool = False) -> Any:
    """A superuser connection to a database on the local server."""
    connection = driver.connect(host="127.0.0.1", user="postgres", dbname=dbname)
    connection.autocommit = autocommit
    return connection
