"""Run the pgclone benchmark: ``python -m bench [--size 1GB] [--reps 3] [--skip-3x] ...``.

Builds a shop database of the given size, then measures, each contender
several times and alternately in one run:

- dump: pgclone (``manage.py pgclone dump --wait`` through a real Celery
  worker), the floor ``pg_dump -Fc -Z0 > /dev/null``, django-pgclone 3.8;
- restore: pgclone from local storage, raw ``pg_restore -j 2`` of an
  uncompressed file into a new database, django-pgclone's restore;
- restore streamed from S3 (moto) against a raw single-stream ``pg_restore``
  fed from a local pipe;
- local restore (``restore :NAME``) against ``CREATE DATABASE ... TEMPLATE ...
  STRATEGY FILE_COPY``;
- the longest gap a client reconnecting every 5 ms sees during restores;
- the worker's peak memory, at the default size and three times it;
- fixed overhead: an empty database's dump, and enqueue-to-start latency.

It writes ``bench/results/bench-<time>.md`` and ``.json`` (and ``latest.*``),
and removes every database, process and file it made, even on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from bench import schema
from pgclone import databases

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
VENVS = BENCH / ".venvs"
LEGACY_VERSION = "3.8.*"
PREFIX = "pgclone_bench_"
PG = {
    "host": os.environ.get("PGHOST", "127.0.0.1"),
    "port": os.environ.get("PGPORT", "5432"),
    "user": os.environ.get("PGUSER", "postgres"),
}
TINY_BYTES = 12 * 1024**2
DEFAULT_BYTES = 1024**3


def log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    if text == "tiny":
        return TINY_BYTES
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)B?", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"size like 1GB, 300MB or tiny, not {text!r}")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[match.group(2)]
    return int(float(match.group(1)) * scale)


# PostgreSQL -------------------------------------------------------------------


def connect(dbname: str = "postgres") -> Any:
    conn = psycopg2.connect(dbname=dbname, connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


def execute(statement: Any, dbname: str = "postgres") -> list[tuple]:
    with contextlib.closing(connect(dbname)) as conn, conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchall() if cur.description else []


def drop_database(name: str) -> None:
    execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_database(name: str, template: str | None = None) -> None:
    drop_database(name)
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
    execute(statement)


def database_size(name: str) -> int:
    return execute(sql.SQL("SELECT pg_database_size({})").format(sql.Literal(name)))[0][0]


def pg_env() -> dict[str, str]:
    return {**os.environ, "PGHOST": PG["host"], "PGPORT": PG["port"], "PGUSER": PG["user"]}


def build_database(name: str, size: int) -> dict[str, Any]:
    """Create ``name`` and fill it to about ``size`` bytes, server-side."""
    units = max((size - schema.EMPTY_DATABASE_BYTES) // schema.BYTES_PER_UNIT, 500)
    started = time.perf_counter()
    create_database(name)
    execute(schema.TABLES, name)
    errors: list[BaseException] = []

    def fill(statements: list[str]) -> None:
        try:
            with contextlib.closing(connect(name)) as conn, conn.cursor() as cur:
                cur.execute("SET synchronous_commit = off")
                for statement in statements:
                    cur.execute(statement)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=fill, args=(group,)) for group in schema.fill_statements(units)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    with contextlib.closing(connect(name)) as conn, conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '256MB'")
        for statement in schema.INDEXES:
            cur.execute(statement)
        cur.execute("SELECT sum(n_live_tup)::bigint FROM pg_stat_user_tables")
        rows = cur.fetchone()[0]
    built = {
        "name": name,
        "units": units,
        "rows": rows,
        "bytes": database_size(name),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    log(
        f"built {name}: {rows} rows, {built['bytes'] / 1024**2:.0f} MB in {built['build_seconds']}s"
    )
    return built


# Processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """End a process we started, and its process group (it was started in its own)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _memory(pid: int) -> tuple[str, int, int]:
    """(command name, RSS bytes, PSS bytes) of a process; zeros if it is gone."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        rss = pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
        return name, rss, pss
    except OSError:
        return "", 0, 0


class MemorySampler:
    """Samples a process tree every 50 ms and keeps the peaks of one measurement."""

    TOOLS = ("pg_dump", "pg_restore", "zstd", "psql")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.peaks = {"worker_rss": 0, "worker_pss": 0, "task_rss": 0, "tree_rss": 0}

    def _sample(self) -> None:
        tree = _children()
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(tree.get(pid, []))
        worker_rss = worker_pss = task_rss = tree_rss = 0
        for pid in pids:
            name, rss, pss = _memory(pid)
            tree_rss += rss
            if name not in self.TOOLS:
                worker_rss += rss
                worker_pss += pss
                task_rss = max(task_rss, rss)
        with self._lock:
            if not self.peaks:
                return
            for key, value in (
                ("worker_rss", worker_rss),
                ("worker_pss", worker_pss),
                ("task_rss", task_rss),
                ("tree_rss", tree_rss),
            ):
                self.peaks[key] = max(self.peaks[key], value)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(Exception):
                self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class SwapProbe:
    """A client that connects, runs ``SELECT 1`` and disconnects every 5 ms."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.longest = 0.0
        self.failures = 0
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_ok = time.perf_counter()
        while not self._stop.is_set():
            try:
                conn = psycopg2.connect(dbname=self.dbname, connect_timeout=2, **PG)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.fetchone()
                finally:
                    conn.close()
                now = time.perf_counter()
                self.longest = max(self.longest, now - last_ok)
                last_ok = now
                self.queries += 1
            except psycopg2.Error:
                self.failures += 1
            time.sleep(0.005)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.longest * 1000


@dataclass
class Worker:
    label: str
    queue: str
    env: dict[str, str]
    process: subprocess.Popen
    sampler: MemorySampler


# The run -----------------------------------------------------------------------


@dataclass
class Bench:
    size: int
    reps: int
    tiny: bool
    with_legacy: bool
    with_3x: bool
    variants: list[dict[str, str]]
    pool: str = "prefork"
    keep_logs: Path | None = None
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    databases: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.work = BENCH / ".work" / self.session
        self.logs = self.work / "logs"
        self.db = {
            role: f"{PREFIX}{self.session}_{role}"
            for role in ("jobs", "data", "data3x", "target", "empty", "raw", "copy", "legacy")
        }
        self.bucket = f"pgclone-bench-{self.session}"
        self.moto: str | None = None
        self.legacy_python: Path | None = None

    # bookkeeping --------------------------------------------------------------

    def record(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def new_database(self, role: str, template: str | None = None) -> str:
        name = self.db[role]
        self.databases.add(name)
        create_database(name, template)
        return name

    def base_env(self, **extra: str) -> dict[str, str]:
        env = pg_env()
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(
            PYTHONPATH=str(ROOT),
            DJANGO_SETTINGS_MODULE="bench.settings",
            BENCH_JOBS_DB=self.db["jobs"],
            BENCH_DATA_DB=self.db["data"],
            BENCH_DATA3X_DB=self.db["data3x"],
            BENCH_TARGET_DB=self.db["target"],
            BENCH_EMPTY_DB=self.db["empty"],
            BENCH_QUEUE=f"pgclone-bench-{self.session}",
            PGCLONE_STORAGE_LOCATION=str(self.work / "dumps"),
            PGCLONE_TEMP_DIR=str(self.work / "tmp"),
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 - moto accepts anything
            AWS_DEFAULT_REGION="us-east-1",
        )
        if self.moto:
            env["PGCLONE_S3_ENDPOINT_URL"] = self.moto
        env.update(extra)
        return env

    def run(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        name: str,
        stdin: Any = None,
        stdout: Any = None,
        cwd: Path = ROOT,
    ) -> float:
        """Run a command to completion; its wall-clock seconds. Fails on a non-zero exit."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        with open(log_path, "ab") as err:
            started = time.perf_counter()
            result = subprocess.run(
                argv,
                env=env or pg_env(),
                cwd=cwd,
                stdin=stdin,
                stdout=stdout if stdout is not None else err,
                stderr=err,
                check=False,
            )
            elapsed = time.perf_counter() - started
        if result.returncode != 0:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv[:4])}... exited {result.returncode}:\n{tail}")
        return elapsed

    def manage(self, *args: str, worker: Worker, name: str) -> float:
        argv = [sys.executable, str(BENCH / "manage.py"), "pgclone", *args]
        return self.run(argv, env=worker.env, name=name)

    # services -----------------------------------------------------------------

    def start_moto(self, stack: contextlib.ExitStack) -> None:
        port = free_port()
        self.logs.mkdir(parents=True, exist_ok=True)
        out = stack.enter_context(open(self.logs / "moto.log", "wb"))  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(stop_process, process)
        endpoint = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError("the moto server exited")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(endpoint + "/", timeout=1)  # noqa: S310 - loopback
                return True
            return False

        wait_for(answers, 30, "the moto S3 server")
        self.moto = endpoint
        client = self.s3()
        client.create_bucket(Bucket=self.bucket)
        stack.callback(self.remove_bucket)

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.moto,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106 - moto accepts anything
            region_name="us-east-1",
        )

    def remove_bucket(self) -> None:
        with contextlib.suppress(Exception):
            client = self.s3()
            for upload in client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket):
                for item in page.get("Contents", []):
                    client.delete_object(Bucket=self.bucket, Key=item["Key"])
            client.delete_bucket(Bucket=self.bucket)

    def start_worker(
        self, stack: contextlib.ExitStack, label: str, settings: dict[str, str]
    ) -> Worker:
        queue = f"pgclone-bench-{self.session}-{len(self.workers)}"
        env = self.base_env(BENCH_QUEUE=queue, **settings)
        hostname = f"bench-{self.session}-{len(self.workers)}@{socket.gethostname()}"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.celery_app",
            "worker",
            "--hostname",
            hostname,
            "--queues",
            queue,
            "--concurrency",
            "1",
            "--pool",
            self.pool,
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"worker-{len(self.workers)}.log"
        out = stack.enter_context(open(log_path, "wb"))  # noqa: SIM115
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        stack.callback(stop_process, process)

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the Celery worker exited:\n{log_path.read_text()[-2000:]}")
            return " ready." in log_path.read_text(errors="replace")

        wait_for(ready, 60, "the Celery worker")
        sampler = MemorySampler(process.pid)
        stack.callback(sampler.stop)
        sampler.reset()
        time.sleep(1)
        for key, value in sampler.peaks.items():
            self.record(f"idle_worker{len(self.workers)}_{key}_mb", value / 1024**2)
        worker = Worker(label, queue, env, process, sampler)
        self.workers.append(worker)
        return worker

    def install_legacy(self) -> Path | None:
        """django-pgclone 3.8 in its own virtualenv (kept between runs: it is a cache)."""
        venv = VENVS / "django-pgclone-3.8"
        python = venv / "bin" / "python"
        try:
            if not python.exists():
                log("installing django-pgclone 3.8 into bench/.venvs/")
                self.run([sys.executable, "-m", "venv", str(venv)], name="legacy-install")
                self.run(
                    [
                        str(python),
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        f"django-pgclone=={LEGACY_VERSION}",
                        "psycopg2-binary",
                    ],
                    name="legacy-install",
                )
            probe = [
                str(python),
                "-c",
                "import importlib.metadata as m; print(m.version('django-pgclone'))",
            ]
            version = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
            self.extra["legacy_version"] = version.strip()
            return python
        except Exception as exc:
            shutil.rmtree(venv, ignore_errors=True)
            self.notes.append(
                f"django-pgclone 3.8 could not be installed, so it is not measured: {exc}"
            )
            return None

    def legacy_env(self) -> dict[str, str]:
        env = pg_env()
        for name in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV"):
            env.pop(name, None)
        env.update(
            BENCH_DATA_DB=self.db["data"],
            BENCH_LEGACY_TARGET_DB=self.db["legacy"],
            BENCH_LEGACY_STORAGE=str(self.work / "legacy-dumps"),
            PATH=f"{self.legacy_python.parent}:{env.get('PATH', '')}"
            if self.legacy_python
            else env["PATH"],
        )
        return env

    # jobs ---------------------------------------------------------------------

    def last_job(self) -> dict[str, Any]:
        rows = execute(
            "SELECT j.id, j.status, j.dump_key, j.result, j.created_at, j.started_at, "
            "j.finished_at, "
            "(SELECT min(s.started_at) FROM pgclone_jobstep s WHERE s.job_id = j.id) "
            "FROM pgclone_job j ORDER BY j.created_at DESC LIMIT 1",
            self.db["jobs"],
        )
        job_id, status, key, result, created, started, finished, first_step = rows[0]
        if status != "succeeded":
            raise RuntimeError(f"job {job_id} ended {status}")
        job = {
            "id": str(job_id),
            "key": key,
            "result": result,
            "seconds": (finished - started).total_seconds(),
        }
        if first_step:
            job["enqueue_to_start_ms"] = (first_step - created).total_seconds() * 1000
            self.record("enqueue_to_start_ms", job["enqueue_to_start_ms"])
        return job

    def wait_for_drops(self, job: dict[str, Any]) -> None:
        """A restore drops the database it replaced just after it reports success,
        in the worker. The next contender starts once that is done, as it does
        after the raw contenders' own drops (which are not timed either)."""
        statement = sql.SQL(
            "SELECT count(*) FROM pg_database WHERE starts_with(datname, {})"
        ).format(sql.Literal(databases.old_name(job["id"])))
        wait_for(lambda: execute(statement)[0][0] == 0, 300, "the replaced database's drop")

    def pgclone_job(
        self,
        name: str,
        args: list[str],
        worker: Worker,
        *,
        probe: bool = False,
        memory: str | None = None,
    ) -> dict[str, Any]:
        worker.sampler.reset()
        prober = SwapProbe(self.db["target"]) if probe else None
        try:
            seconds = self.manage(*args, "--wait", worker=worker, name=name)
        finally:
            gap = prober.stop() if prober else None
        job = self.last_job()
        self.wait_for_drops(job)
        self.record(f"{name}_s", seconds)
        self.record(f"{name}_job_s", job["seconds"])
        if gap is not None:
            self.record("swap_gap_ms", gap)
            if "swap_window_ms" in job["result"]:
                self.record("swap_window_ms", job["result"]["swap_window_ms"])
        peaks = dict(worker.sampler.peaks)
        for key, value in peaks.items():
            self.record(f"{memory or name}_{key}_mb", value / 1024**2)
        return job

    # rounds -------------------------------------------------------------------

    def alternate(self, contenders: list[tuple[str, Callable[[], None]]]) -> None:
        """Each contender ``reps`` times, the order rotated each round.

        django-pgclone is measured if it works here: its failure is recorded in
        the notes and the run goes on without it.
        """
        failed: set[str] = set()
        for rep in range(self.reps):
            shift = rep % len(contenders)
            for name, contender in contenders[shift:] + contenders[:shift]:
                if name in failed:
                    continue
                log(f"rep {rep + 1}/{self.reps}: {name}")
                if not name.startswith("django-pgclone"):
                    contender()
                    continue
                try:
                    contender()
                except Exception as exc:
                    failed.add(name)
                    self.notes.append(f"{name} failed here, so it is not measured: {exc}")
                    log(f"{name} failed: {exc}")

    def dump_round(self, main: Worker) -> str:
        keys: dict[str, str] = {}

        def pgclone_dump(worker: Worker, label: str) -> Callable[[], None]:
            def go() -> None:
                job = self.pgclone_job(
                    label, ["dump", "--database", "data"], worker, memory=f"{label}_1x"
                )
                keys[label] = job["key"]
                self.extra.setdefault("sizes", {})[label] = job["result"].get("size")
                self.extra["sizes"]["raw"] = job["result"].get("raw_size")

            return go

        def floor() -> None:
            argv = ["pg_dump", "-Fc", "-Z0", "-d", self.db["data"]]
            with open(os.devnull, "wb") as null:
                self.record("floor_dump_s", self.run(argv, name="floor_dump", stdout=null))

        def legacy() -> None:
            assert self.legacy_python
            storage = self.work / "legacy-dumps"
            shutil.rmtree(storage, ignore_errors=True)
            argv = [str(self.legacy_python), "manage.py", "pgclone", "dump", "--database", "data"]
            self.record(
                "legacy_dump_s",
                self.run(argv, env=self.legacy_env(), cwd=BENCH / "legacy", name="legacy_dump"),
            )
            dumps = sorted(storage.rglob("*.dump"))
            self.extra.setdefault("sizes", {})["legacy"] = dumps[-1].stat().st_size
            keys["legacy"] = str(dumps[-1].relative_to(storage))

        contenders = [
            ("pgclone dump", pgclone_dump(main, "pgclone_dump")),
            ("pg_dump floor", floor),
        ]
        for worker in self.workers[1:]:
            contenders.append(
                (f"pgclone dump {worker.label}", pgclone_dump(worker, f"dump[{worker.label}]"))
            )
        if self.legacy_python:
            contenders.append(("django-pgclone dump", legacy))
        self.alternate(contenders)
        self.extra["legacy_key"] = keys.get("legacy")
        return keys["pgclone_dump"]

    def restore_round(self, main: Worker, key: str, raw_file: Path) -> None:
        def pgclone(worker: Worker, label: str) -> Callable[[], None]:
            return lambda: self.pgclone_job(
                label,
                ["restore", key, "--database", "target"],
                worker,
                memory=f"{label}_1x",
            )

        def raw() -> None:
            started = time.perf_counter()
            name = self.new_database("raw")
            argv = [
                "pg_restore",
                "-j",
                "2",
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "-d",
                name,
                str(raw_file),
            ]
            self.run(argv, name="raw_restore")
            self.record("raw_restore_s", time.perf_counter() - started)
            drop_database(name)

        def legacy() -> None:
            argv = [
                str(self.legacy_python),
                "manage.py",
                "pgclone",
                "restore",
                self.extra["legacy_key"],
            ]
            self.record(
                "legacy_restore_s",
                self.run(argv, env=self.legacy_env(), cwd=BENCH / "legacy", name="legacy_restore"),
            )

        contenders = [
            ("pgclone restore", pgclone(main, "pgclone_restore")),
            ("pg_restore -j 2", raw),
        ]
        for worker in self.workers[1:]:
            contenders.append(
                (f"pgclone restore {worker.label}", pgclone(worker, f"restore[{worker.label}]"))
            )
        if self.legacy_python and self.extra.get("legacy_key"):
            self.new_database("legacy")
            contenders.append(("django-pgclone restore", legacy))
        self.alternate(contenders)

    def s3_round(self, main: Worker, raw_file: Path) -> None:
        s3_env = {"PGCLONE_STORAGE_LOCATION": f"s3://{self.bucket}/dumps"}
        s3_worker = Worker("s3", main.queue, {**main.env, **s3_env}, main.process, main.sampler)
        key: dict[str, str] = {}

        def dump() -> None:
            job = self.pgclone_job(
                "s3_dump", ["dump", "--database", "data"], s3_worker, memory="s3_dump_1x"
            )
            key["key"] = job["key"]

        def restore() -> None:
            self.pgclone_job(
                "s3_restore",
                ["restore", key["key"], "--database", "target"],
                s3_worker,
                memory="s3_restore_1x",
            )

        def raw() -> None:
            started = time.perf_counter()
            name = self.new_database("raw")
            cat = subprocess.Popen(["cat", str(raw_file)], stdout=subprocess.PIPE)
            try:
                argv = [
                    "pg_restore",
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    "-d",
                    name,
                ]
                self.run(argv, name="raw_stream_restore", stdin=cat.stdout)
            finally:
                cat.stdout.close()
                cat.wait()
            self.record("raw_stream_restore_s", time.perf_counter() - started)
            drop_database(name)

        dump()  # a dump to restore from (it counts as a sample too)
        self.alternate([("pgclone restore from S3", restore), ("pg_restore | single stream", raw)])
        self.extra["s3_key"] = key["key"]

    def local_round(self, main: Worker) -> None:
        # Both copy files that must be on disk first: each starts from a fresh
        # checkpoint, so neither pays for the dirty pages of what ran before.
        def pgclone() -> None:
            execute("CHECKPOINT")
            self.pgclone_job(
                "local_restore",
                ["restore", f":{self.db['data']}", "--database", "target"],
                main,
                memory="local_restore_1x",
            )

        def template() -> None:
            execute("CHECKPOINT")
            started = time.perf_counter()
            name = self.new_database("copy", template=self.db["data"])
            self.record("template_copy_s", time.perf_counter() - started)
            drop_database(name)

        self.alternate(
            [("pgclone restore :NAME", pgclone), ("CREATE DATABASE ... TEMPLATE", template)]
        )

    def swap_round(self, main: Worker) -> None:
        """Restores with a client reconnecting every 5 ms to the database being
        replaced. Its connections cost CPU (a backend started every few ms), so
        it runs in restores of its own, not in the timed ones; a copy of
        ``data`` makes them short, and their swap is the same as any restore's."""
        for rep in range(max(self.reps, 5)):
            log(f"swap under a reconnecting client {rep + 1}")
            self.pgclone_job(
                "swap_restore",
                ["restore", f":{self.db['data']}", "--database", "target"],
                main,
                probe=True,
                memory="local_restore_1x",
            )

    def overhead_round(self, main: Worker) -> None:
        self.new_database("empty")
        for _ in range(max(self.reps, 3)):
            # What a command costs before any job: Python, Django, pgclone, the broker.
            self.record(
                "manage_py_startup_s",
                self.manage("jobs", "--limit", "1", worker=main, name="startup"),
            )
        for rep in range(max(self.reps, 3)):
            log(f"empty dump {rep + 1}")
            self.pgclone_job(
                "empty_dump", ["dump", "--database", "empty"], main, memory="empty_dump"
            )

    def triple_round(self, main: Worker) -> None:
        """Peak memory at 1x and 3x, side by side: the worker's allocator history
        (it has run every earlier round) is then the same for both sizes."""
        self.databases.add(self.db["data3x"])
        self.extra["data3x"] = build_database(self.db["data3x"], self.size * 3)
        s3 = {"PGCLONE_STORAGE_LOCATION": f"s3://{self.bucket}/dumps"}
        s3_worker = Worker("s3", main.queue, {**main.env, **s3}, main.process, main.sampler)
        for label, worker in (("", main), ("s3_", s3_worker)):
            log(f"1x and 3x {label or 'local '}dumps and restores")
            for size, alias in (("1x", "data"), ("3x", "data3x")):
                # 1x jobs here are named paired_…: compared with the 3x ones beside them.
                prefix = "paired_" if size == "1x" else ""
                job = self.pgclone_job(
                    f"{prefix}{label}dump_{size}",
                    ["dump", "--database", alias],
                    worker,
                    memory=f"{prefix}{label or 'pgclone_'}dump_{size}",
                )
                self.pgclone_job(
                    f"{prefix}{label}restore_{size}",
                    ["restore", job["key"], "--database", "target"],
                    worker,
                    memory=f"{prefix}{label or 'pgclone_'}restore_{size}",
                )
        drop_database(self.db["data3x"])

    # everything ---------------------------------------------------------------

    def execute_all(self) -> dict[str, Any]:
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            stack.callback(self.cleanup)
            self.work.mkdir(parents=True)
            (self.work / "tmp").mkdir()
            for role in ("jobs", "target"):
                self.new_database(role)
            self.run(
                [sys.executable, str(BENCH / "manage.py"), "migrate", "--verbosity", "0"],
                env=self.base_env(),
                name="migrate",
            )
            self.databases.add(self.db["data"])
            self.extra["data"] = build_database(self.db["data"], self.size)
            if self.with_legacy:
                self.legacy_python = self.install_legacy()
            self.start_moto(stack)
            main = self.start_worker(stack, "default", {})
            for variant in self.variants:
                label = ",".join(f"{k}={v}" for k, v in variant.items())
                self.start_worker(stack, label, variant)
            raw_file = self.work / "raw.dump"
            self.run(
                ["pg_dump", "-Fc", "-Z0", "-f", str(raw_file), "-d", self.db["data"]],
                name="raw_file",
            )
            key = self.dump_round(main)
            self.restore_round(main, key, raw_file)
            self.s3_round(main, raw_file)
            self.local_round(main)
            self.swap_round(main)
            self.overhead_round(main)
            if self.with_3x:
                self.triple_round(main)
        self.extra["total_seconds"] = round(time.perf_counter() - started, 1)
        return self.report()

    def cleanup(self) -> None:
        """Drop every database this run made (pgclone's leftovers too) and its files."""
        if self.keep_logs and self.logs.exists():
            with contextlib.suppress(OSError):
                shutil.copytree(self.logs, self.keep_logs / f"logs-{self.session}")
        leftovers: list[str] = []
        with contextlib.suppress(Exception):
            rows = execute(
                "SELECT result->>'temp_database' FROM pgclone_job WHERE result ? 'temp_database'",
                self.db["jobs"],
            )
            leftovers = [row[0] for row in rows if row[0]]
        for name in sorted({*self.databases, *leftovers, *self.db.values()}):
            if name.startswith(PREFIX) or name in leftovers:
                with contextlib.suppress(Exception):
                    drop_database(name)
        with contextlib.suppress(Exception):
            for (name,) in execute(
                sql.SQL("SELECT datname FROM pg_database WHERE datname LIKE {}").format(
                    sql.Literal(f"{PREFIX}{self.session}%")
                )
            ):
                drop_database(name)
        shutil.rmtree(self.work, ignore_errors=True)
        with contextlib.suppress(OSError):
            (BENCH / ".work").rmdir()

    # the report ---------------------------------------------------------------

    def median(self, name: str) -> float | None:
        values = self.samples.get(name)
        return statistics.median(values) if values else None

    def report(self) -> dict[str, Any]:
        m = self.median
        sizes = self.extra.get("sizes", {})
        rows: list[dict[str, Any]] = []

        def target(
            what: str,
            value: float | None,
            limit: float,
            unit: str,
            *,
            lower: bool = True,
            detail: str = "",
        ) -> None:
            if value is None:
                rows.append(
                    {
                        "target": what,
                        "value": None,
                        "limit": limit,
                        "unit": unit,
                        "met": None,
                        "detail": detail or "not measured",
                    }
                )
                return
            met = value <= limit if lower else value >= limit
            rows.append(
                {
                    "target": what,
                    "value": round(value, 3),
                    "limit": limit,
                    "unit": unit,
                    "met": met,
                    "detail": detail,
                }
            )

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None

        target(
            "dump / pg_dump -Z0 floor",
            ratio(m("pgclone_dump_s"), m("floor_dump_s")),
            1.4,
            "x",
            detail=f"{fmt(m('pgclone_dump_s'))} s vs {fmt(m('floor_dump_s'))} s",
        )
        target(
            "django-pgclone dump / pgclone dump",
            ratio(m("legacy_dump_s"), m("pgclone_dump_s")),
            2.5,
            "x",
            lower=False,
            detail=f"{fmt(m('legacy_dump_s'))} s vs {fmt(m('pgclone_dump_s'))} s",
        )
        if sizes.get("legacy") and sizes.get("pgclone_dump"):
            target(
                "pgclone dump size / django-pgclone's",
                sizes["pgclone_dump"] / sizes["legacy"],
                1.0,
                "x",
                detail=f"{sizes['pgclone_dump'] / 1024**2:.1f} MB "
                f"vs {sizes['legacy'] / 1024**2:.1f} MB",
            )
        else:
            target("pgclone dump size / django-pgclone's", None, 1.0, "x")
        target(
            "restore (local) / pg_restore -j 2",
            ratio(m("pgclone_restore_s"), m("raw_restore_s")),
            1.15,
            "x",
            detail=f"{fmt(m('pgclone_restore_s'))} s vs {fmt(m('raw_restore_s'))} s; the job "
            f"alone {fmt(m('pgclone_restore_job_s'))} s",
        )
        target(
            "django-pgclone restore / pgclone restore",
            ratio(m("legacy_restore_s"), m("pgclone_restore_s")),
            1.2,
            "x",
            lower=False,
            detail=f"{fmt(m('legacy_restore_s'))} s vs {fmt(m('pgclone_restore_s'))} s",
        )
        target(
            "restore from S3 / single-stream pg_restore",
            ratio(m("s3_restore_s"), m("raw_stream_restore_s")),
            1.2,
            "x",
            detail=f"{fmt(m('s3_restore_s'))} s vs {fmt(m('raw_stream_restore_s'))} s",
        )
        target(
            "restore :NAME / CREATE DATABASE ... TEMPLATE",
            ratio(m("local_restore_s"), m("template_copy_s")),
            1.2,
            "x",
            detail=f"{fmt(m('local_restore_s'))} s vs {fmt(m('template_copy_s'))} s; the job "
            f"alone {fmt(m('local_restore_job_s'))} s "
            f"({fmt(ratio(m('local_restore_job_s'), m('template_copy_s')))} x)",
        )
        gaps = self.samples.get("swap_gap_ms", [])
        target(
            "longest swap gap (max over restores)",
            max(gaps) if gaps else None,
            100,
            "ms",
            detail=f"median {fmt(m('swap_gap_ms'))} ms; pgclone's own window median "
            f"{fmt(m('swap_window_ms'))} ms",
        )

        def peak(suffix: str, prefix: str = "") -> float | None:
            return max(
                (
                    v
                    for k, vs in self.samples.items()
                    if k.startswith(prefix) and k.endswith(suffix)
                    for v in vs
                ),
                default=None,
            )

        peak_1x = peak("_1x_worker_rss_mb")
        peak_3x = peak("_3x_worker_rss_mb")
        paired_1x = peak("_1x_worker_rss_mb", prefix="paired_")
        target(
            "worker peak RSS (1x, all jobs)",
            peak_1x,
            150,
            "MB",
            detail=f"the worker's processes ({self.pool} pool), pg_dump/pg_restore excluded; "
            f"largest process {fmt(peak('_1x_task_rss_mb'))} MB, "
            f"PSS {fmt(peak('_1x_worker_pss_mb'))} MB, "
            f"idle {fmt(m('idle_worker0_worker_rss_mb'))} MB",
        )
        target(
            "worker peak RSS growth 3x vs 1x",
            peak_3x - paired_1x if peak_3x and paired_1x else None,
            10,
            "MB",
            detail=f"3x jobs' peak {fmt(peak_3x)} MB, 1x jobs run beside them {fmt(paired_1x)} MB"
            if peak_3x
            else "3x size skipped",
        )
        target(
            "empty database dump, end to end",
            m("empty_dump_s"),
            1.5,
            "s",
            detail=f"job itself {fmt(m('empty_dump_job_s'))} s",
        )
        target(
            "enqueue to start (median)",
            m("enqueue_to_start_ms"),
            100,
            "ms",
            detail=f"max {fmt(max(self.samples.get('enqueue_to_start_ms', [0])))} ms",
        )

        medians = {
            name: round(statistics.median(values), 4) for name, values in self.samples.items()
        }
        return {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "size_requested_bytes": self.size,
            "reps": self.reps,
            "pool": self.pool,
            "tiny": self.tiny,
            "variants": self.variants,
            "targets": rows,
            "medians": medians,
            "samples": {
                name: [round(v, 4) for v in values] for name, values in self.samples.items()
            },
            "extra": self.extra,
            "notes": self.notes,
        }


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def machine() -> dict[str, Any]:
    memory = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    version = execute("SHOW server_version")[0][0]
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(memory / 1024**3, 1),
        "postgresql": version,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def markdown(report: dict[str, Any]) -> str:
    mach = report["machine"]
    extra = report["extra"]
    data = extra.get("data", {})
    lines = [
        f"# pgclone bench, {report['when']}",
        "",
        f"Machine: {mach['nproc']} CPUs, {mach['memory_gb']} GB RAM, "
        f"PostgreSQL {mach['postgresql']}, "
        f"Python {mach['python']}.",
        f"Database: {data.get('rows', 0):,} rows, {data.get('bytes', 0) / 1024**2:.0f} MB on disk "
        f"(built in {data.get('build_seconds')} s); {report['reps']} repetition(s) per contender"
        + (" (tiny mode)" if report["tiny"] else "")
        + f"; Celery worker pool: {report.get('pool', 'prefork')}, concurrency 1.",
        "",
        "| target | limit | measured | met | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["targets"]:
        op = ">=" if row["target"].startswith("django-pgclone") else "<="
        unit = row["unit"]
        met = {True: "met", False: "**missed**", None: "n/a"}[row["met"]]
        lines.append(
            f"| {row['target']} | {op} {row['limit']} {unit} | {fmt(row['value'])} {unit} "
            f"| {met} | {row['detail']} |"
        )
    lines += [
        "",
        "Medians (seconds unless the name says otherwise; `_job_s` is the job's own duration):",
        "",
    ]
    lines += ["| measurement | median | samples |", "| --- | --- | --- |"]
    for name, value in sorted(report["medians"].items()):
        samples = ", ".join(fmt(v) for v in report["samples"][name])
        lines.append(f"| {name} | {fmt(value)} | {samples} |")
    sizes = extra.get("sizes", {})
    if sizes:
        lines += [
            "",
            "Dump sizes: " + ", ".join(f"{k} {v / 1024**2:.1f} MB" for k, v in sizes.items() if v),
        ]
    for note in report["notes"]:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def write_results(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    suffix = "-tiny" if report["tiny"] else ""
    md_path, json_path = out / f"bench-{stamp}{suffix}.md", out / f"bench-{stamp}{suffix}.json"
    md_path.write_text(markdown(report))
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    for path in (md_path, json_path):
        latest = out / f"latest{suffix}{path.suffix}"
        shutil.copyfile(path, latest)
    return md_path, json_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", default="1GB", help="database size: 1GB (default), 300MB, ... or tiny"
    )
    parser.add_argument(
        "--reps", type=int, help="repetitions per contender (default 3; 1 when tiny)"
    )
    parser.add_argument(
        "--skip-3x", action="store_true", help="skip the 3x-size memory measurement"
    )
    parser.add_argument("--skip-legacy", action="store_true", help="skip django-pgclone 3.8")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="SETTING=VALUE[,SETTING=VALUE]",
        help="also measure pgclone's dump and restore with these settings (a worker of its own), "
        "e.g. PGCLONE_ZSTD_LEVEL=1",
    )
    parser.add_argument(
        "--pool",
        choices=["prefork", "threads", "solo"],
        default="prefork",
        help="the Celery worker's pool (default prefork, Celery's default)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="copy the commands' and worker's logs to --out"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (bench/results)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tiny = args.size == "tiny"
    variants = []
    for text in args.variant:
        pairs = dict(item.split("=", 1) for item in text.split(","))
        if not all(name.startswith("PGCLONE_") for name in pairs):
            raise SystemExit(f"--variant takes PGCLONE_* settings, not {text!r}")
        variants.append(pairs)
    bench = Bench(
        size=parse_size(args.size),
        reps=args.reps or (1 if tiny else 3),
        tiny=tiny,
        with_legacy=not (tiny or args.skip_legacy),
        with_3x=not (tiny or args.skip_3x),
        variants=variants,
        pool=args.pool,
        keep_logs=args.out if args.keep_logs else None,
    )

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    log(f"session {bench.session}: {args.size}, {bench.reps} rep(s)")
    report = bench.execute_all()
    md_path, json_path = write_results(report, args.out)
    print(md_path.read_text())
    log(f"wrote {md_path} and {json_path}")
    return 0
