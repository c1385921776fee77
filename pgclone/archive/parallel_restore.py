"""Restoring a ``pgclone-container-3`` container in parallel, in one read of it.

The container is read once, from local storage or S3 alike (decrypted,
decompressed and checked as it streams: :func:`pgclone.archive.streams.decompress`),
and each stream goes where the restore needs it as it comes
(:class:`pgclone.archive.planned_restore.Router`):

- the pre-data archive (the tables, types, functions; no index or
  constraint yet) into a file of the owner's only in ``workdir``, restored
  by ``pg_restore`` once it has all come and its SHA-256 is the one the
  (signed) manifest names: the dump's own SHA-256 is known only at its
  end, and SQL that someone who can write to the storage put in its place
  must never run;
- each table's members, once each has all come, to a pool of
  ``PGCLONE_RESTORE_JOBS`` COPY sessions (:class:`pgclone.archive.copy_pool.CopyPool`):
  rows, not SQL, into the tables the checked pre-data made;
- the rest's data archive (sequences, large objects, tables copied by
  pg_dump) and the post-data archive (indexes, constraints, triggers) into
  files of the owner's only in ``workdir``, which ``pg_restore`` reads once
  every row is in and the whole dump's checksums have been checked.

So the scratch disk holds the schema archives and the rest's (a few MB,
more where the database keeps large objects) and never a table's rows, and
memory stays about jobs times ``MEMBER_SIZE`` times a few, whatever the
database's size. A failure anywhere stops the reading, the sessions and the
programs at once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pgclone.archive import containers, copy_pool, planned_restore, restore_lists, streams
from pgclone.exceptions import DumpDamaged
from pgclone.pg import extensions, postgres, programs

POST_DATA_FILE = "post-data"
PRE_DATA_FILE = "pre-data"
REST_FILE = "rest"


class CheckedArchive:
    """A pg_dump archive of the container written to a file of the owner's
    only as it comes, hashed; on ``close``, restored only if its SHA-256 is
    ``expected`` (``None``: a dump made before the manifest named it, which
    ``fetch`` checked whole before anything was created)."""

    def __init__(self, path: Path, expected: str | None, restore: Any) -> None:
        self.path = path
        self._expected = expected
        self._restore = restore
        self._digest = hashlib.sha256()
        self._file = planned_restore.FileSink(path)

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self._file.write(data)

    def close(self) -> None:
        self._file.close()
        found = self._digest.hexdigest()
        if self._expected is not None and found != self._expected:
            raise DumpDamaged(
                f"The dump is damaged: its {containers.PRE_DATA} archive's SHA-256 is {found}, "
                f"its manifest says {self._expected}. Nothing of it was run."
            )
        self._restore(str(self.path))

    def abort(self) -> None:
        self._file.abort()


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
        pre_data_sha256: str | None = None,
    ) -> None:
        self.target = target
        self.jobs = max(1, jobs)
        self.pre_data_sha256 = pre_data_sha256
        self.pre_data = workdir / PRE_DATA_FILE
        self.rest = workdir / REST_FILE
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
        if self.rest.exists():
            self._restore_file(self.rest)
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
        if stream == containers.PRE_DATA:
            return CheckedArchive(self.pre_data, self.pre_data_sha256, self._restore_file)
        later = self.post_data if stream == containers.POST_DATA else self.rest
        return planned_restore.FileSink(later)

    def _restore_file(self, path: Path | str) -> None:
        """A pg_restore of the archive at ``path`` (its pre-data, or the rest's data)."""
        argv = postgres.pg_restore_argv(self.target, path=str(path))
        restore_lists.run(argv, path=str(path), env=self.target.env(), edit=self._edit)

    def _restore_post_data(self) -> None:
        """Indexes and constraints, with ``jobs`` pg_restore jobs, once every
        row is in. The archive lists the tables too (not restored), so that
        pg_restore never runs at once two foreign keys that lock the same
        tables in turn (a deadlock); one made before it did gets one job."""
        path = str(self.post_data)
        env = self.target.env()
        listed = restore_lists.listing(path, env)
        jobs = self.jobs if restore_lists.names_tables(listed) else 1
        argv = postgres.pg_restore_argv(self.target, jobs=jobs, path=path)
        argv = [*argv[:-1], "--section=post-data", path]
        restore_lists.run(argv, path=path, env=env, edit=self._edit, listed=listed)
