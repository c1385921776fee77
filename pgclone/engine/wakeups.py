"""Waking whoever follows a job when its rows change: PostgreSQL's NOTIFY.

Every transition in ``pgclone.engine.jobs`` (and every progress save) ends
with :func:`changed`, a NOTIFY on the job's own channel, sent on the
connection that wrote the change: PostgreSQL delivers it once that change is
committed. A follower (``manage.py pgclone … --wait``, ``tail``) LISTENs on a
session of its own and reads the job's rows when woken, instead of reading
them every few milliseconds: it sees a step's end at once, and spends no CPU
on polling while a dump or a restore needs all of it.

A notification is only ever a hint to read again. One that is lost (a worker
of an older pgclone, a session cut by a restore's swap, job tables outside
PostgreSQL) costs latency, not correctness: the follower still reads at
least every ``Listener.wait``'s timeout.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import time
import uuid
from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError, connections, transaction

from pgclone.exceptions import PgCloneError
from pgclone.pg import driver, job_tables, postgres
from pgclone.pg.driver import sql

logger = logging.getLogger(__name__)


def channel(job_id: Any) -> str:
    """The channel of one job: its followers wake for it alone."""
    return f"pgclone_job_{uuid.UUID(str(job_id)).hex}"


def changed(job_id: Any) -> None:
    """Tell the job's followers that its rows changed. Never raises: a
    notification that can't be sent only makes a follower read later."""
    # Sent, and listened for, where the job rows are written: a router may
    # send reads to a replica, which no NOTIFY reaches.
    connection = connections[job_tables.jobs_alias()]
    if connection.vendor != "postgresql":
        return
    # In a transaction (an admin request's), a savepoint keeps a failure from
    # breaking it; the notification leaves with the transaction's commit.
    block = transaction.atomic(using=connection.alias) if connection.in_atomic_block else None
    try:
        with block or contextlib.nullcontext(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_catalog.pg_notify(%s, '')", [channel(job_id)])
    except DatabaseError as exc:
        logger.debug("pgclone: could not notify the followers of job %s: %s", job_id, exc)


class Listener:
    """A session of pgclone's own, LISTENing on one job's channel, that runs
    nothing else: what makes its socket readable is a notification (or its end)."""

    def __init__(self, job_id: Any) -> None:
        self._conn = postgres.conn_info(job_tables.jobs_alias())
        self._channel = channel(job_id)
        self._connection: Any = None
        self._next_attempt = 0.0

    def open(self) -> bool:
        """Connect and LISTEN; False (and a retry a second later at the soonest)
        when the database can't be reached now (a swap may have closed it)."""
        if time.monotonic() < self._next_attempt:
            return False
        try:
            self._connection = postgres.open_connection(self._conn)
            with self._connection.cursor() as cursor:
                cursor.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except (PgCloneError, driver.Error) as exc:
            logger.debug("pgclone: could not listen for job changes: %s", exc)
            self.close()
            self._next_attempt = time.monotonic() + 1.0
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """Wait until the job changed (True) or ``timeout`` seconds passed
        (False). True too when the session was (re)opened: what changed before
        it listened is only seen by reading."""
        if self._connection is None:
            if self.open():
                return True
            time.sleep(timeout)
            return False
        with selectors.DefaultSelector() as selector:
            selector.register(self._connection.fileno(), selectors.EVENT_READ)
            if not selector.select(timeout):
                return False
        try:
            driver.take_notifies(self._connection)
        except driver.Error:  # the session ended (a swap ends every session): reopen it
            self.close()
        return True

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(driver.Error):
                self._connection.close()
            self._connection = None


@contextlib.contextmanager
def listening(job_id: Any) -> Iterator[Listener | None]:
    """A :class:`Listener` on the job, or None when the job tables are not in
    PostgreSQL (then the follower polls); closed on leaving."""
    if connections[job_tables.jobs_alias()].vendor != "postgresql":
        yield None
        return
    listener = Listener(job_id)
    listener.open()  # before the follower's first read: no change falls between
    try:
        yield listener
    finally:
        listener.close()
