"""How far ``pg_restore`` got, read from the server while it runs.

``pg_restore`` says nothing about its progress, but the server does (PostgreSQL
14 and newer): ``pg_stat_progress_copy`` has a row for each COPY loading a
table, with the bytes it received so far, and ``pg_stat_progress_create_index``
one for each index being built. A thread samples both for the database being
restored and records the step's progress: the COPY bytes loaded (finished
tables plus those under way) against the dump's uncompressed size, labelled
"loading data" and then "building indexes". It is a sampled estimate: the last
bytes a COPY loads after the last sample before it ends are not counted, so a
fast restore of few tables shows less than it did. On older servers nothing is
sampled: the step shows the progress of reading the dump only.

A container's rows are loaded by pgclone's own sessions, each running many
COPYs one after another (a run of a table's members each): a sample would
miss most of them. Its restore counts the bytes its sessions sent
(``loaded``), and the samples say only which phase it is in.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from pgclone.engine import jobs, threads
from pgclone.pg import databases, driver, postgres

logger = logging.getLogger("pgclone")

SAMPLE_SECONDS = 0.2
FIRST_VERSION = 140000  # pg_stat_progress_copy appeared in PostgreSQL 14
LOADING = "loading data"
INDEXING = "building indexes"
COPIES = "SELECT pid, relid, bytes_processed FROM pg_stat_progress_copy WHERE datname = %s"
INDEXES = "SELECT count(*) FROM pg_stat_progress_create_index WHERE datname = %s"


class RestoreWatch:
    """Records ``pg_restore``'s progress into ``database`` on ``job_id`` while in use."""

    def __init__(
        self,
        job_id: Any,
        server: postgres.ConnInfo,
        database: str,
        total: int,
        loaded: Callable[[], int] | None = None,
    ) -> None:
        self.job_id = job_id
        self.counted = loaded  # the bytes loaded so far, counted by the restore itself
        self.server = server.with_name("postgres")
        self.database = database
        self.total = total
        self.loaded = 0  # bytes of the tables whose COPY has finished
        self._copying: dict[int, tuple[int, int]] = {}  # pid -> (table oid, bytes so far)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.active = False  # whether the server reports it (and the dump's size is known)

    def __enter__(self) -> RestoreWatch:
        try:
            with postgres.connect(self.server) as connection:
                (version,) = databases.execute(connection, "SHOW server_version_num")[0]
        except Exception as exc:  # progress is worth a log line, never a failed restore
            logger.info("pgclone: no restore progress for job %s: %s", self.job_id, exc)
            return self
        self.active = int(version) >= FIRST_VERSION and self.total > 0
        if self.active:
            jobs.start_progress(self.job_id, self.total, label=LOADING)
            self._thread = threads.start(self._run, name="pgclone-restore-progress")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            with postgres.connect(self.server) as connection:
                while not self._stop.wait(SAMPLE_SECONDS):
                    self._sample(connection)
        except Exception as exc:  # progress is worth a log line, never a failed restore
            logger.info("pgclone: restore progress of job %s stopped: %s", self.job_id, exc)

    def _sample(self, connection: driver.Connection) -> None:
        rows = databases.execute(connection, COPIES, [self.database])
        now = {pid: (relid, done) for pid, relid, done in rows}
        for pid, (relid, done) in self._copying.items():
            if now.get(pid, (None, 0))[0] != relid:  # that table's COPY has ended
                self.loaded += done
        self._copying = now
        (building,) = databases.execute(connection, INDEXES, [self.database])[0]
        copying = sum(done for _, done in now.values())
        label = INDEXING if building and not now else LOADING
        done = min(self.counted() if self.counted else self.loaded + copying, self.total)
        with contextlib.suppress(Exception):  # the job row's database may be busy: next time
            jobs.record_progress(self.job_id, done, self.total, label=label)
