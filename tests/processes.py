"""Processes a test starts: Celery workers (the test project's, on a queue of the
test's own), ``manage.py pgclone`` run as a user runs it, a Redis of a test's own."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from celery import Celery

from tests.helpers import ROOT, free_port, wait_for


def own_queue(kind: str) -> str:
    """A Celery queue of one test's own, named after this test session so that the
    session's end removes what the broker keeps of it."""
    return f"pgclone-{kind}-{os.environ['PGCLONE_TEST_SESSION']}-{uuid.uuid4().hex[:8]}"


def worker_env(database: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="tests.settings",
        PGCLONE_TEST_DATABASE=database,
        **extra,
    )
    return env


class Worker:
    def __init__(
        self, name: str, process: subprocess.Popen, log: Path, storage: str, tmp: Path | None
    ) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.storage = storage  # where jobs the worker starts itself (beat) dump to
        self.tmp = tmp  # its TMPDIR, removed when it stops (None: the test chose one)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(
    database: str,
    log: Path,
    *,
    moto: str,
    name: str | None = None,
    queue: str | None = None,
    pool: str = "prefork",
    prefix: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Worker:
    from tests.celery_app import app

    name = name or f"pgclone-test-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    storage = str(log.parent / "dumps")
    # A TMPDIR of its own, removed by stop_worker: what a killed pool child leaves
    # there (multiprocessing's pymp-* folders) goes with it.
    tmp = None
    if "TMPDIR" not in (env or {}):
        tmp = Path(tempfile.mkdtemp(prefix="pgclone-worker-tmp-"))
        env = {**(env or {}), "TMPDIR": str(tmp)}
    argv = [
        *prefix, sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
        "--hostname", name, "--queues", queue or os.environ["PGCLONE_TEST_QUEUE"],
        "--concurrency", "1", "--pool", pool, "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=worker_env(
                database, PGCLONE_TEST_S3_ENDPOINT=moto, PGCLONE_TEST_STORAGE=storage, **(env or {})
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: stop_worker ends all of it
        )
    worker = Worker(name, process, log, storage, tmp)

    # A Celery app of its own for the pings: fresh broker connections, whatever
    # happened to this process's (a test restarts Redis).
    pinger = Celery(broker=app.conf.broker_url, set_as_current=False)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"The Celery worker exited:\n{worker.output()}")
        return bool(pinger.control.ping(destination=[name], timeout=0.5))

    try:
        wait_for(ready, timeout=60, what="the Celery worker")
    except BaseException:
        stop_worker(worker)  # a worker that never answered leaves nothing either
        raise
    finally:
        pinger.close()
    return worker


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def stop_worker(worker: Worker) -> None:
    """Stop a worker and whatever it started (its pool children, a wrapper's
    children), even when a test already killed its main process."""
    if worker.process.poll() is None:
        _signal_group(worker.process, signal.SIGTERM)
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _signal_group(worker.process, signal.SIGKILL)
            worker.process.wait()
    _signal_group(worker.process, signal.SIGKILL)
    if worker.tmp is not None:
        shutil.rmtree(worker.tmp, ignore_errors=True)


def run_pgclone(
    *args: str,
    database: str,
    location: str,
    moto: str = "",
    timeout: float = 180,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``manage.py pgclone ARGS`` in a process of its own, as a user runs it."""
    extra = {"PGCLONE_TEST_STORAGE": location, "PGCLONE_TEST_S3_ENDPOINT": moto, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "django", "pgclone", *args],
        cwd=ROOT,
        env=worker_env(database, **extra),
        stdin=subprocess.DEVNULL,  # a script's: never a terminal, so never a prompt
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# A Redis of a test's own -------------------------------------------------------------


class PrivateRedis:
    """A redis-server of one test's own on a free loopback port, keeping nothing on
    disk: the test may stop and restart it. The machine's Redis (6379), which other
    programs and the rest of the suite use, is never touched."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "redis.log"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for a worker or a ``manage.py`` process using this broker
        (tests.settings reads it), with a queue of its own there."""
        return {"PGCLONE_TEST_BROKER": self.url, "PGCLONE_TEST_QUEUE": f"pgclone-{self.port}"}

    def _answers(self) -> bool:
        """PING answered by this very server (not by whatever took the port)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            return bool(client.ping()) and client.info("server")["process_id"] == self.pid
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", str(self.folder),
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.process = process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"redis-server on port {self.port} exited:\n{self.log.read_text()}"
                )
            return self._answers()

        try:
            wait_for(ready, timeout=30, what=f"the private Redis on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop it (SIGTERM: a shutdown that saves nothing) and wait until it is gone."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop it and start it again on the same port: whatever it held is lost."""
        self.stop()
        self.start()


@contextlib.contextmanager
def pinging_through(broker_url: str) -> Iterator[None]:
    """start_worker pings the new worker through this process's broker setting:
    point that at ``broker_url`` meanwhile. Nothing is sent through it from here,
    and connections this process already holds keep their broker."""
    from tests.celery_app import app

    saved = app.conf.broker_url
    app.conf.broker_url = broker_url
    try:
        yield
    finally:
        app.conf.broker_url = saved
