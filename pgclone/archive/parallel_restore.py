"""Restoring a ``pgclone-container-3`` container in parallel, in one read of it.

The container is read once, from local storage or S3 alike (decrypted,
decompressed and checked as it streams: :func:`pgclone.archive.streams.decompress`),
and each stream goes where the restore needs it as it comes
(:class:`pgclone.archive.planned_restore.Router`):

- the pre-data archive straight into ``pg_restore`` (the tables, types,
  functions; no index or constraint yet);
- each table's members, once each has all come, to a pool of
  ``PGCLONE_RESTORE_JOBS`` COPY sessions (:class:`pgclone.archive.copy_pool.CopyPool`);
  the rest's data archive (sequences, large objects, tables copied by
  pg_dump) straight into a ``pg_restore`` beside them;
- the post-data archive (indexes, constraints, triggers: a few MB at most,
  no table data) into a file of the owner's only in ``workdir``, which
  ``pg_restore --jobs`` reads once every row is in and the whole dump's
  checksums have been checked.

So the scratch disk holds the post-data archive and nothing else, and memory
stays about jobs times ``MEMBER_SIZE`` times a few, whatever the database's size. A
failure anywhere stops the reading, the sessions and the programs at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgclone.archive import containers, copy_pool, planned_restore, restore_lists, streams
from pgclone.exceptions import DumpDamaged
from pgclone.pg import extensions, postgres, programs

POST_DATA_FILE = "post-data"


class ParallelRestore:
    """One restore of a container into ``target``: :meth:`run` reads it and
    loads it; ``loaded`` counts the COPY bytes every session sent so far (read
    from any thread, for the step's progress), ``sessions`` the sessions that
    loaded any rows, once :meth:`run` returned."""

    def __init__(
        self,
        target: postgres.ConnInfo,
        jobs: int,
        workdir: Path,
        installed: extensions.Installed | None = None,
    ) -> None:
        self.target = target
        self.jobs = max(1, jobs)
        self.post_data = workdir / POST_DATA_FILE
        self._edit = (installed or extensions.Installed.inspect(target)).edit
        self._pool: copy_pool.CopyPool | None = None
        self._children = programs.current_children()  # the sinks start in the reading thread
        self._router = planned_restore.Router(self._open_stream, stop_reading=True)
        self.sessions = 0

    def loaded(self) -> int:
        pool = self._pool
        return pool.loaded if pool is not None else 0

    def run(self, source: Any, checks: dict[str, Any]) -> int:
        """Restore the container read from ``source`` (``checks``: what
        ``streams.decompress`` checks it against); returns the rows COPYed."""
        try:
            streams.decompress(source, self._router.write, **checks)
            self._router.finish()
            if self._pool is not None:
                self._pool.close()
        except BaseException:
            if self._pool is not None:
                self._pool.abort()
            self._router.abort()
            raise
        self._restore_post_data()
        self.sessions = self._pool.used if self._pool is not None else 0
        return self._pool.rows if self._pool is not None else 0

    def _open_stream(self, stream: str, table: dict[str, Any] | None) -> Any:
        """Run by the thread that reads the dump, as each stream starts."""
        programs.adopt_children(self._children)
        if self._router.plan["format"] != containers.FORMAT:
            raise DumpDamaged(  # the older formats are restored otherwise
                f"The dump is damaged: its {containers.PLAN} says "
                f"{self._router.plan['format']!r}, its manifest {containers.FORMAT!r}."
            )
        if table is not None:
            if self._pool is None:
                self._pool = copy_pool.CopyPool(self.target, self._router.plan, self.jobs)
            return copy_pool.TableFeed(self._pool, table)
        if stream == containers.POST_DATA:
            return planned_restore.FileSink(self.post_data)
        argv = postgres.pg_restore_argv(self.target)
        return restore_lists.ListedSink(argv, self.target.env(), self._edit)

    def _restore_post_data(self) -> None:
        """Indexes and constraints, with ``jobs`` pg_restore jobs. The archive
        has no TABLE entries (they are pre-data's), so pg_restore would not know
        that a foreign key waits for its tables' rows: it runs once they are all in."""
        path = str(self.post_data)
        argv = postgres.pg_restore_argv(self.target, jobs=self.jobs, path=path)
        argv = [*argv[:-1], "--section=post-data", path]
        restore_lists.run(argv, path=path, env=self.target.env(), edit=self._edit)
