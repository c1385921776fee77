"""Running the programs pgclone uses (pg_dump, pg_restore, psql, zstd…): argument
lists, an allowlisted environment, a bounded tail of stderr for the error, and
children that die with the process that started them.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from pgclone.exceptions import CommandFailed, ConfigurationError

STDERR_TAIL_BYTES = 4000
STDERR_HEAD_BYTES = 2000  # kept too: pg_dump 16+ prints a whole batched LOCK after its error
# libpq's environment variables, which the programs pgclone runs may need (none
# of them a secret of pgclone's: the password comes from the ConnInfo). A child
# gets these and the locale, PATH, HOME, TMPDIR and TZ, nothing else: no
# PGCLONE_AGE_IDENTITY, no cloud credentials, no project secrets.
LIBPQ_ENVIRONMENT = (
    "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSFILE", "PGSERVICE",
    "PGSERVICEFILE", "PGCHANNELBINDING", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE", "PGREQUIRESSL",
    "PGSSLCOMPRESSION", "PGSSLCERT", "PGSSLKEY", "PGSSLCERTMODE", "PGSSLROOTCERT", "PGSSLCRL",
    "PGSSLCRLDIR", "PGSSLSNI", "PGREQUIREPEER", "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE", "PGKRBSRVNAME", "PGGSSLIB", "PGGSSDELEGATION",
    "PGCONNECT_TIMEOUT", "PGCLIENTENCODING", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS",
    "PGREQUIREAUTH", "PGDATESTYLE", "PGTZ", "PGGEQO", "PGSYSCONFDIR", "PGLOCALEDIR",
)  # fmt: skip
_CHILD_ENVIRONMENT = ("PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ", *LIBPQ_ENVIRONMENT)


def child_environment(password: str = "") -> dict[str, str]:
    """The environment of a program pgclone runs: what it needs of this
    process's (``_CHILD_ENVIRONMENT`` and the LC_* variables) and the password."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in _CHILD_ENVIRONMENT or name.startswith("LC_")
    }
    if password:
        env["PGPASSWORD"] = password
    return env


def tool_version(program: str) -> str:
    return run([program, "--version"], env=child_environment()).strip()


class _StderrTail:
    """Drains a child's stderr in a thread, keeping its first and last bytes."""

    def __init__(self, stream: Any) -> None:
        self._head = b""
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0  # of the chunks kept
        self._after_head = 0  # bytes seen after the head: more than the tail, a gap
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: Any) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            if len(self._head) < STDERR_HEAD_BYTES:
                room = STDERR_HEAD_BYTES - len(self._head)
                self._head, chunk = self._head + chunk[:room], chunk[room:]
                if not chunk:
                    continue
            self._chunks.append(chunk)
            self._size += len(chunk)
            self._after_head += len(chunk)
            while self._size - len(self._chunks[0]) >= STDERR_TAIL_BYTES:
                self._size -= len(self._chunks.popleft())
        stream.close()

    def text(self) -> str:
        self._thread.join(timeout=5)
        tail = b"".join(self._chunks)[-STDERR_TAIL_BYTES:]
        gap = b"\n[...]\n" if self._after_head > len(tail) else b""
        return (self._head + gap + tail).decode("utf-8", errors="replace")


_threads = threading.local()
_SETPRIV = shutil.which("setpriv")


def _dies_with_us(argv: list[str]) -> list[str]:
    """Have the kernel kill the program if this process dies (a worker killed
    mid-job), so that no pg_dump or pg_restore goes on as an orphan. Uses
    util-linux's setpriv where there is one (every Linux distribution)."""
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


def current_children() -> set[subprocess.Popen]:
    """The programs this thread is running now; another thread may kill them (cancel)."""
    if not hasattr(_threads, "children"):
        _threads.children = set()
    return _threads.children


def adopt_children(children: set[subprocess.Popen]) -> None:
    """Make this thread's programs part of another thread's ``children`` (a step's
    helper thread: cancelling the step kills them too)."""
    _threads.children = children


class _Session:
    """A server session among a step's children: killing it (a cancelled job)
    cancels its running statement, which fails the step as a killed program does."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def kill(self) -> None:
        with contextlib.suppress(Exception):  # the session may be gone already
            self._connection.cancel()


@contextlib.contextmanager
def session_among_children(connection: Any) -> Iterator[None]:
    """While the block runs, ``connection``'s statements are cancelled with this
    thread's programs (a dump's main session waiting for a lock, or copying)."""
    children = current_children()
    session = _Session(connection)
    children.add(session)
    try:
        yield
    finally:
        children.discard(session)


def require_program(program: str, env: dict[str, str] | None = None) -> None:
    """Raise ConfigurationError unless ``program`` is on the PATH of ``env``
    (this process's environment when None)."""
    path = (os.environ if env is None else env).get("PATH")
    if shutil.which(program, path=path) is None:
        raise ConfigurationError(
            f"{program} was not found on PATH: install the PostgreSQL client tools "
            "(same major version as the server or newer) on every worker."
        )


@contextlib.contextmanager
def spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    stdin: Any = None,
    stdout: Any = subprocess.PIPE,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[subprocess.Popen]:
    """Run ``argv``; on leaving, wait for it and raise CommandFailed if it failed.
    ``pass_fds``: descriptors the program inherits (a list it reads as /dev/fd/N).

    If the block raises, the child is killed first so that nothing keeps
    running behind a failed step.
    """
    require_program(argv[0], env)
    proc = subprocess.Popen(
        _dies_with_us(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        pass_fds=pass_fds,
    )
    stderr = _StderrTail(proc.stderr)
    proc.pgclone_failure = lambda code: CommandFailed(argv, code, stderr.text())
    children = current_children()
    children.add(proc)
    try:
        yield proc
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        children.discard(proc)
        if proc.stdout:
            proc.stdout.close()
    ended(proc)


def ended(proc: subprocess.Popen) -> None:
    """Wait for a program :func:`spawn` started, its output read to the end;
    CommandFailed if it failed. Leaving ``spawn`` does this; a caller that must
    know sooner (the others it runs beside should stop) calls it first."""
    returncode = proc.wait()
    if returncode != 0:
        raise proc.pgclone_failure(returncode)


def run(
    argv: list[str], *, env: dict[str, str], stdin: Any = None, pass_fds: tuple[int, ...] = ()
) -> str:
    """Run a program to completion and return its stdout."""
    with spawn(argv, env=env, stdin=stdin, pass_fds=pass_fds) as proc:
        output = proc.stdout.read()
    return output.decode("utf-8", errors="replace")
