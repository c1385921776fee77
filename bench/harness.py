"""The bench's harness: the processes it starts and stops, free ports, waiting, timed commands.

Nothing here imports Django, Celery or pgclone, so any code (the bench's own
modules, a test) can use it without configuring a Django project first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def log(message: str) -> None:
    """A progress line on stderr: stdout carries the report."""
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` every 0.1 s until it returns something truthy, which is
    returned; fail at the deadline, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def group_members(pgid: int) -> list[int]:
    """The live processes of a process group (zombies are gone: they only wait to be
    reaped). Read from ``/proc``; where there is none, the group's leader if alive."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                state, _ppid, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
                if int(group) == pgid and state not in ("Z", "X"):
                    members.append(int(entry.name))
    return members


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """End a process we started and its process group (it was started in its own):
    every process of the group, not only its leader, is gone when this returns.

    A Celery worker's pool processes, or what a task started, can outlive the
    worker's main process for a moment; under load, longer. They are waited
    for until ``timeout``, then killed.
    """
    if process.poll() is not None and not group_members(process.pid):
        return  # all gone (and the group's id may be another's by now)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None or group_members(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        wait_for(
            lambda: not group_members(process.pid),
            timeout,
            f"the processes of group {process.pid} to end after SIGKILL",
        )


def run_timed(
    argv: list[str],
    *,
    log_path: Path,
    env: dict[str, str],
    cwd: Path,
    stdin: Any = None,
    stdout: Any = None,
) -> float:
    """Run a command to completion; its wall-clock seconds. Fails on a non-zero exit.

    Its stderr (and its stdout, unless given somewhere else to go) is appended
    to ``log_path``, so that a failure can quote its last lines.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as err:
        started = time.perf_counter()
        result = subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            # Never the bench's terminal: a restore would ask for confirmation.
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else err,
            stderr=err,
            check=False,
        )
        elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {result.returncode}:\n{tail}")
    return elapsed


def start_process(
    stack: contextlib.ExitStack,
    argv: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start a long-running process, its output to ``log_path``, in a session of
    its own so that ``stack`` stops it with everything it started."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = stack.enter_context(open(log_path, "wb"))  # noqa: SIM115 - the stack closes it
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    stack.callback(stop_process, process)
    return process


def start_moto(
    stack: contextlib.ExitStack, log_path: Path, *, env: dict[str, str] | None = None
) -> str:
    """A moto S3 server on a free loopback port, stopped by ``stack``; its endpoint URL."""
    port = free_port()
    process = start_process(
        stack,
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        log_path,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError("the moto server exited")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(endpoint + "/", timeout=1)  # noqa: S310 - loopback
            return True
        return False

    wait_for(answers, 30, "the moto S3 server")
    return endpoint


def celery_worker_argv(app: str, hostname: str, queue: str, pool: str) -> list[str]:
    """A Celery worker that runs one task at a time from one queue, and talks to
    no other worker: what is measured is the job, not the cluster's chatter."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--hostname",
        hostname,
        "--queues",
        queue,
        "--concurrency",
        "1",
        "--pool",
        pool,
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def start_celery_worker(
    stack: contextlib.ExitStack,
    *,
    app: str,
    hostname: str,
    queue: str,
    pool: str,
    env: dict[str, str],
    log_path: Path,
    cwd: Path,
) -> subprocess.Popen:
    """Start a worker (stopped by ``stack``) and wait until it says it is ready.

    Its log is read rather than pinging it, so that waiting needs no broker
    connection of this process's own.
    """
    argv = celery_worker_argv(app, hostname, queue, pool)
    process = start_process(stack, argv, log_path, env=env, cwd=cwd)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the Celery worker exited:\n{log_path.read_text()[-2000:]}")
        return " ready." in log_path.read_text(errors="replace")

    wait_for(ready, 60, "the Celery worker")
    return process
