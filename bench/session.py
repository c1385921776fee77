"""One bench run: its names, samples, services and workers, and its cleanup.

Everything a run makes is named after its session (``pgclone_bench_<session>_…``,
``bench/.work/<session>/``, the queue, the bucket), so that two runs never
meet and ``cleanup`` can find all of it, even after a failure.
"""

from __future__ import annotations

import compileall
import contextlib
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg2 import sql

from bench import harness
from bench.harness import log
from bench.postgres import create_database, drop_database, execute, pg_env
from bench.probes import MemorySampler
from pgclone.archive import encryption
from pgclone.pg import kept_copies

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PREFIX = "pgclone_bench_"
ROLES = ("jobs", "data", "data3x", "one_table", "target", "empty", "raw", "copy", "legacy")


@dataclass
class Worker:
    """A Celery worker of the bench's, and the environment its commands run with."""

    label: str
    queue: str
    env: dict[str, str]
    process: subprocess.Popen
    sampler: MemorySampler
    # A baseline's worker (``--baseline``) names its samples ``baseline_…``
    # (``baseline2_…``, …) and keeps its jobs in a database of its own,
    # migrated by its own code.
    prefix: str = ""
    jobs_db: str = ""


@dataclass
class Bench:
    size: int
    reps: int
    tiny: bool
    with_legacy: bool
    with_3x: bool
    variants: list[dict[str, str]]
    pool: str = "prefork"
    only: list[str] | None = None  # these rounds (bench.rounds.ROUNDS) rather than all
    baselines: list[Path] = field(default_factory=list)  # other checkouts run beside this one
    baseline_workers: list[Worker] = field(default_factory=list)
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
        self.db = {role: f"{PREFIX}{self.session}_{role}" for role in ROLES}
        # What ``copy KEY NEWNAME`` makes: a user's name (pgclone_ names are pgclone's).
        self.copy_name = f"bench_{self.session}_copy"
        self.bucket = f"pgclone-bench-{self.session}"
        self.moto: str | None = None
        self.legacy_python: Path | None = None
        # This run's age key pair: every worker holds the identity, and the
        # encryption round's commands dump to the recipient.
        self.age_identity, self.age_recipient = encryption.generate()

    def compile_packages(self) -> None:
        """Byte-compile the packages whose commands are timed: this pgclone, the
        bench project, each ``--baseline`` checkout's pgclone. A pgclone installed
        by pip comes compiled (as django-pgclone, installed fresh, does); a source
        checkout under ``PYTHONDONTWRITEBYTECODE=1`` (this machine's environment)
        would otherwise compile every module it imports at each command's start:
        0.1-0.15 s more per command, measured on `pgclone jobs --limit 1`."""
        folders = [ROOT / "pgclone", BENCH, *(checkout / "pgclone" for checkout in self.baselines)]
        runs = re.compile(re.escape(f"{os.sep}.work{os.sep}"))  # the runs' own files
        for folder in folders:
            if not compileall.compile_dir(folder, quiet=1, rx=runs):
                raise RuntimeError(f"could not byte-compile {folder}")

    # bookkeeping --------------------------------------------------------------

    def record(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def new_database(self, role: str, template: str | None = None) -> str:
        """Create the run's database for ``role``, remembered for the cleanup."""
        name = self.db[role]
        self.databases.add(name)
        create_database(name, template)
        return name

    def base_env(self, **extra: str) -> dict[str, str]:
        """The environment of the bench project's commands and workers
        (``bench/settings.py`` reads it): this run's databases, queue and folders."""
        env = pg_env()
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(
            PYTHONPATH=str(ROOT),
            DJANGO_SETTINGS_MODULE="bench.settings",
            BENCH_JOBS_DB=self.db["jobs"],
            BENCH_DATA_DB=self.db["data"],
            BENCH_DATA3X_DB=self.db["data3x"],
            BENCH_ONE_TABLE_DB=self.db["one_table"],
            BENCH_TARGET_DB=self.db["target"],
            BENCH_EMPTY_DB=self.db["empty"],
            BENCH_QUEUE=f"pgclone-bench-{self.session}",
            # Every process of this run carries its session, so that what
            # outlives it can be told from another run's.
            BENCH_SESSION=self.session,
            PGCLONE_STORAGE_LOCATION=str(self.work / "dumps"),
            PGCLONE_TEMP_DIR=str(self.work / "tmp"),
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 - moto accepts anything
            AWS_DEFAULT_REGION="us-east-1",
            PGCLONE_AGE_IDENTITY=self.age_identity,
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
        """Run a command to completion, logged to ``logs/<name>.log``; its
        wall-clock seconds. Fails on a non-zero exit."""
        return harness.run_timed(
            argv,
            log_path=self.logs / f"{name}.log",
            env=env or pg_env(),
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
        )

    def manage(self, *args: str, worker: Worker, name: str) -> float:
        """``manage.py pgclone ARGS`` of the bench project, sending to ``worker``."""
        argv = [sys.executable, str(BENCH / "manage.py"), "pgclone", *args]
        return self.run(argv, env=worker.env, name=name)

    # services -----------------------------------------------------------------

    def start_moto(self, stack: contextlib.ExitStack) -> None:
        """A moto S3 server and this run's bucket, both removed by ``stack``."""
        self.moto = harness.start_moto(stack, self.logs / "moto.log", env=self.base_env())
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
        self,
        stack: contextlib.ExitStack,
        label: str,
        settings: dict[str, str],
        *,
        prefix: str = "",
        cwd: Path = ROOT,
    ) -> Worker:
        """A worker on a queue of its own with these ``PGCLONE_*`` settings (or
        environment), its memory sampled from the start; its idle memory is the
        first sample."""
        number = len(self.workers) + len(self.baseline_workers)
        queue = f"pgclone-bench-{self.session}-{number}"
        env = self.base_env(BENCH_QUEUE=queue, **settings)
        process = harness.start_celery_worker(
            stack,
            app="bench.celery_app",
            hostname=f"bench-{self.session}-{number}@{socket.gethostname()}",
            queue=queue,
            pool=self.pool,
            env=env,
            log_path=self.logs / f"worker-{number}.log",
            cwd=cwd,
        )
        sampler = MemorySampler(process.pid)
        stack.callback(sampler.stop)
        sampler.reset()
        time.sleep(1)
        for key, value in sampler.peaks.items():
            self.record(f"{prefix}idle_worker{number}_{key}_mb", value / 1024**2)
        jobs_db = env["BENCH_JOBS_DB"]
        worker = Worker(label, queue, env, process, sampler, prefix=prefix, jobs_db=jobs_db)
        if not prefix:
            self.workers.append(worker)
        return worker

    def start_baseline(self, stack: contextlib.ExitStack, checkout: Path) -> Worker:
        """A worker running the pgclone of another checkout (``--baseline``) on
        the same bench project: its package comes first on ``PYTHONPATH``
        (through a folder holding only a link to it, so that the bench itself is
        still this one), and its jobs go to a database its own migrations made."""
        number = len(self.baseline_workers) + 1
        prefix = "baseline_" if number == 1 else f"baseline{number}_"
        shim = self.work / prefix.rstrip("_")
        shim.mkdir()
        (shim / "pgclone").symlink_to(checkout.resolve() / "pgclone")
        self.db[f"{prefix}jobs"] = jobs = f"{PREFIX}{self.session}_{prefix}jobs"
        env = {"PYTHONPATH": f"{shim}{os.pathsep}{ROOT}", "BENCH_JOBS_DB": jobs}
        # ``python -m celery`` (and ``manage.py shell``) put their working
        # folder first on sys.path: the worker runs in the shim.
        show = "import pgclone; print(pgclone.__file__)"
        for argv in (
            [sys.executable, "-c", show],
            [sys.executable, str(BENCH / "manage.py"), "shell", "-c", show],
        ):
            found = subprocess.run(
                argv, env=self.base_env(**env), cwd=shim, capture_output=True, text=True,
                check=True,
            ).stdout.strip().splitlines()[-1]  # fmt: skip
            if not Path(found).resolve().is_relative_to(checkout.resolve()):
                raise RuntimeError(f"{prefix}: {argv[1]} would import {found}")
        self.extra.setdefault("baselines", {})[prefix] = str(checkout.resolve())
        self.databases.add(jobs)
        create_database(jobs)
        argv = [sys.executable, str(BENCH / "manage.py"), "migrate", "--verbosity", "0"]
        self.run(argv, env=self.base_env(**env), name=f"migrate_{prefix}")
        label = prefix.rstrip("_")
        worker = self.start_worker(stack, label, env, prefix=prefix, cwd=shim)
        self.baseline_workers.append(worker)
        return worker

    def with_settings(self, worker: Worker, label: str, settings: dict[str, str]) -> Worker:
        """The same worker (queue, process, sampler), its commands run with other
        settings: the S3 contenders' storage, say."""
        return dataclasses.replace(worker, label=label, env={**worker.env, **settings})

    # rounds -------------------------------------------------------------------

    def alternate(self, contenders: list[tuple[str, Callable[[], None]]]) -> None:
        """Each contender ``reps`` times, the order rotated each round, each
        started after :func:`settle`; the machine's busy CPU time over each
        run of a contender is recorded as ``cpu_s[NAME]`` (what it costs on
        two CPUs that its duration alone doesn't show).

        django-pgclone is measured if it works here: its failure is recorded in
        the notes and the run goes on without it.
        """
        failed: set[str] = set()
        for rep in range(self.reps):
            shift = rep % len(contenders)
            for name, contender in contenders[shift:] + contenders[:shift]:
                if name in failed:
                    continue
                settle()
                log(f"rep {rep + 1}/{self.reps}: {name}")
                before = busy_cpu_seconds()
                try:
                    contender()
                except Exception as exc:
                    if not name.startswith("django-pgclone"):
                        raise
                    failed.add(name)
                    self.notes.append(f"{name} failed here, so it is not measured: {exc}")
                    log(f"{name} failed: {exc}")
                    continue
                self.record(f"cpu_s[{name}]", busy_cpu_seconds() - before)

    # cleanup ------------------------------------------------------------------

    def cleanup(self) -> None:
        """Drop every database this run made (pgclone's leftovers too) and its files."""
        if self.keep_logs and self.logs.exists():
            with contextlib.suppress(OSError):
                shutil.copytree(self.logs, self.keep_logs / f"logs-{self.session}")
        leftovers: list[str] = [self.copy_name]
        for jobs in [db for role, db in self.db.items() if role.endswith("jobs")]:
            with contextlib.suppress(Exception):
                rows = execute(
                    "SELECT result->>'temp_database', result->>'kept_pending' FROM pgclone_job",
                    jobs,
                )
                leftovers += [name for row in rows for name in row if name]
        with contextlib.suppress(Exception):
            leftovers += self.kept_copies()
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
        self.remove_broker_keys()
        shutil.rmtree(self.work, ignore_errors=True)
        with contextlib.suppress(OSError):
            (BENCH / ".work").rmdir()

    def kept_copies(self) -> list[str]:
        """pgclone's kept copies of this run's dumps (their mark names its storage)."""
        rows = execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE 'pgclone\\_kept\\_%'"
        )
        ours = []
        for name, comment in rows:
            mark = kept_copies.read_mark(comment)
            if mark and mark.location.startswith(str(self.work)):
                ours.append(name)
        return ours

    def remove_broker_keys(self) -> None:
        """What the Redis broker keeps of this run's queues (their bindings)."""
        import redis

        url = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/13")
        with contextlib.suppress(redis.exceptions.RedisError):
            client = redis.Redis.from_url(url, socket_timeout=2)
            for key in client.scan_iter(match=f"*pgclone-bench-{self.session}*", count=500):
                client.delete(key)


def settle() -> None:
    """Untimed, before each contender of a round: the server's dirty buffers
    written (``CHECKPOINT``) and the kernel's dirty pages flushed (``sync``).

    Whatever ran before (building a database, writing the raw file, the
    previous contender's restore) leaves up to gigabytes to write back, and
    whoever runs next pays for it: in the run of 2026-12-07 04:12, without
    this, the first sample of the dump, restore, encryption and one-big-table
    rounds (pgclone's, each time) was 13-38% above its contender's median.
    The page cache stays warm for everyone.
    """
    execute("CHECKPOINT")
    os.sync()


def busy_cpu_seconds() -> float:
    """The CPU time every process of the machine has spent so far (``/proc/stat``:
    user, nice, system, irq, softirq and steal; not idle or iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
