"""pg_restore of an archive with a list (``--use-list``) made from the archive's
own table of contents: what ``pg_restore --list`` prints, edited (by
:meth:`pgclone.pg.extensions.Installed.edit`) to leave out what the restoring
role can't restore.

An archive in a file is listed, then restored. One that streams can't be read
twice, and is not kept: ``pg_restore --list`` and the restoring pg_restore
get the same bytes from its start. The first reads the table of contents at
the archive's head and exits; the second reads the same head, then waits for
its list, which a thread writes into a pipe it reads as /dev/fd/N. pg_restore
opens its list only once it has read the table of contents, so the stream
never waits for a list that waits for the stream.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable

from pgclone import conf
from pgclone.archive import streams
from pgclone.pg import programs

Edit = Callable[[str], str]

_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE ")  # a table's entry in pg_restore --list


def with_list(argv: list[str], fd: int) -> list[str]:
    """``argv`` (a pg_restore) reading its list from the inherited descriptor ``fd``."""
    return [argv[0], f"--use-list=/dev/fd/{fd}", *argv[1:]]


def listing(path: str, env: dict[str, str]) -> str:
    """What ``pg_restore --list`` prints of the archive file ``path``."""
    return programs.run(["pg_restore", "--list", path], env=env)


def names_tables(listed: str) -> bool:
    """Whether the archive whose ``listed`` this is has its tables' entries:
    only then does ``pg_restore --jobs`` know what each post-data entry (a
    foreign key: two tables) locks, and keep apart two that would deadlock."""
    return any(_TABLE.match(line) for line in listed.splitlines())


def run(
    argv: list[str], *, path: str, env: dict[str, str], edit: Edit, listed: str | None = None
) -> None:
    """Run ``argv``, a pg_restore of the archive file ``path``, with the list
    ``edit`` makes of it (of ``listed``, when it was already listed)."""
    if listed is None:
        listed = listing(path, env)
    # No name on disk: nothing is left behind if this process dies.
    with tempfile.TemporaryFile(dir=conf.temp_dir()) as list_file:
        list_file.write(edit(listed).encode())
        list_file.flush()
        list_file.seek(0)
        fd = list_file.fileno()
        programs.run(with_list(argv, fd), env=env, pass_fds=(fd,))


class ListedSink:
    """``argv``, a pg_restore reading stdin, fed what ``write`` is given, with the
    list ``edit`` makes of it (see the module's docstring).

    A refusal by ``edit`` is raised by the next ``write`` (the stream need not
    be read on); a program's failure by ``close``, once the stream has been read
    to its end and checked, as for a pg_restore alone."""

    def __init__(self, argv: list[str], env: dict[str, str], edit: Edit) -> None:
        self._edit = edit
        self._refused: BaseException | None = None
        self._failed: BaseException | None = None
        self._stack = contextlib.ExitStack()
        read_end, write_end = os.pipe()
        try:
            self._lister = self._stack.enter_context(
                programs.spawn(["pg_restore", "--list"], env=env, stdin=subprocess.PIPE)
            )
            self._restorer = self._stack.enter_context(
                programs.spawn(
                    with_list(argv, read_end),
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    pass_fds=(read_end,),
                )
            )
        except BaseException:
            os.close(write_end)
            self._stack.__exit__(*sys.exc_info())
            raise
        finally:
            os.close(read_end)
        with contextlib.suppress(OSError):  # a bigger pipe keeps pg_restore fed
            fcntl.fcntl(self._restorer.stdin.fileno(), fcntl.F_SETPIPE_SZ, streams.PIPE_SIZE)
        # The lister first: the restorer may wait for its list with its pipe full,
        # never before it has read what the lister needs.
        self._tee = streams.Tee([self._lister, self._restorer])
        self._thread = threading.Thread(
            target=self._write_list, args=(write_end,), name="pgclone-list", daemon=True
        )
        self._thread.start()

    def _write_list(self, write_end: int) -> None:
        with open(write_end, "wb") as out:
            try:
                listing = self._lister.stdout.read()
                programs.ended(self._lister)
            except BaseException as exc:  # the archive's head is damaged: close() says so
                self._failed = exc
                self._restorer.kill()  # never restore without the list
                return
            try:
                listed = self._edit(listing.decode("utf-8", errors="replace"))
            except BaseException as exc:  # raised by write() or close()
                self._refused = exc
                self._restorer.kill()
                return
            with contextlib.suppress(BrokenPipeError):  # pg_restore stopped: close() says why
                out.write(listed.encode())

    def write(self, data: bytes) -> None:
        if self._refused is not None:
            raise self._refused
        self._tee.write(data)

    def close(self) -> None:
        self._tee.close()
        self._thread.join()
        error = self._refused or self._failed
        if error is None:
            self._stack.close()  # waits for both; raises CommandFailed for one that failed
            return
        with contextlib.suppress(Exception):  # the restorer was killed: not the cause
            self._stack.close()
        raise error

    def abort(self) -> None:
        for proc in (self._lister, self._restorer):
            proc.kill()
        with contextlib.suppress(Exception):
            self.close()
