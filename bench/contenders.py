"""The contenders: pgclone's jobs, and the raw tools they are measured against.

Each records its own samples on the run (``Bench.record``); the rounds
(``bench/rounds.py``) decide which run against which, and how often.
django-pgclone, the third kind, is in ``bench/django_pgclone.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg2 import sql

from bench.harness import wait_for
from bench.postgres import connect, drop_database, execute
from bench.probes import SwapProbe
from bench.session import Bench, Worker
from pgclone.pg import databases

# pgclone ----------------------------------------------------------------------


def last_job(bench: Bench, worker: Worker) -> dict[str, Any]:
    """The job the last command through ``worker`` ran, from pgclone's own
    tables; fails unless it succeeded.

    Its enqueue-to-start latency is recorded here, for every job alike (a
    baseline's apart, under its prefix: ``baseline_enqueue_to_start_ms``).
    """
    rows = execute(
        "SELECT j.id, j.status, j.dump_key, j.result, j.created_at, j.started_at, "
        "j.finished_at, "
        "(SELECT min(s.started_at) FROM pgclone_jobstep s WHERE s.job_id = j.id) "
        "FROM pgclone_job j ORDER BY j.created_at DESC LIMIT 1",
        worker.jobs_db,
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
        bench.record(f"{worker.prefix}enqueue_to_start_ms", job["enqueue_to_start_ms"])
    return job


def wait_for_drops(job: dict[str, Any]) -> None:
    """A restore drops the database it replaced just after it reports success,
    in the worker. The next contender starts once that is done, as it does
    after the raw contenders' own drops (which are not timed either)."""
    statement = sql.SQL("SELECT count(*) FROM pg_database WHERE starts_with(datname, {})").format(
        sql.Literal(databases.old_name(job["id"]))
    )
    wait_for(lambda: execute(statement)[0][0] == 0, 300, "the replaced database's drop")


def pgclone_job(
    bench: Bench,
    name: str,
    args: list[str],
    worker: Worker,
    *,
    probe: bool = False,
    memory: str | None = None,
    then: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """``manage.py pgclone ARGS --wait`` through ``worker``: a user's wait, end to end.

    Records ``<name>_s`` (the command), ``<name>_job_s`` (the job alone), the
    worker's memory peaks under ``<memory or name>_…_mb`` and, with ``probe``,
    the swap gap a reconnecting client saw; each name begins with the worker's
    prefix (``baseline_`` for ``--baseline``'s). ``then`` runs as soon as the
    command has returned, before the worker's drop of the replaced database.
    """
    name, memory = worker.prefix + name, worker.prefix + (memory or name)
    worker.sampler.reset()
    prober = SwapProbe(bench.db["target"]) if probe else None
    try:
        seconds = bench.manage(*args, "--wait", worker=worker, name=name)
    finally:
        gap = prober.stop() if prober else None
    if then is not None:
        then()
    job = last_job(bench, worker)
    wait_for_drops(job)
    bench.record(f"{name}_s", seconds)
    bench.record(f"{name}_job_s", job["seconds"])
    if gap is not None:
        bench.record(f"{worker.prefix}swap_gap_ms", gap)
        if "swap_window_ms" in job["result"]:
            bench.record(f"{worker.prefix}swap_window_ms", job["result"]["swap_window_ms"])
    peaks = dict(worker.sampler.peaks)
    for key, value in peaks.items():
        bench.record(f"{memory}_{key}_mb", value / 1024**2)
    return job


# the raw tools ----------------------------------------------------------------


def write_raw_file(bench: Bench, role: str = "data") -> Path:
    """An uncompressed custom-format dump of the run's ``role`` database, what
    the raw restores read."""
    raw_file = bench.work / f"raw-{role}.dump"
    bench.run(
        ["pg_dump", "-Fc", "-Z0", "-f", str(raw_file), "-d", bench.db[role]],
        name=f"raw_file_{role}",
    )
    return raw_file


def pg_dump_floor(bench: Bench, label: str = "floor") -> None:
    """``pg_dump -Fc -Z0 > /dev/null``: no dump is faster, so it is the floor
    (recorded as ``{label}_dump_s``: each round that compares with it runs its own)."""
    argv = ["pg_dump", "-Fc", "-Z0", "-d", bench.db["data"]]
    with open(os.devnull, "wb") as null:
        bench.record(f"{label}_dump_s", bench.run(argv, name=f"{label}_dump", stdout=null))


def pg_directory_dump(bench: Bench, *, compress: bool) -> None:
    """``pg_dump -Fd -j 2 -Z0`` into a folder: pg_dump's own parallel dump, a
    session per table; with ``compress``, followed by ``zstd -3 -T2`` of its
    files (what pgclone's dump does in one pass). Recorded as ``pg_dump_dir_s``
    or ``pg_dump_dir_zstd_s`` (with its size); the folder's removal untimed."""
    folder = bench.work / "directory-dump"
    shutil.rmtree(folder, ignore_errors=True)
    argv = ["pg_dump", "-Fd", "-j", "2", "-Z0", "-f", str(folder), "-d", bench.db["data"]]
    seconds = bench.run(argv, name="pg_dump_dir")
    label = "pg_dump_dir"
    if compress:
        files = sorted(str(path) for path in folder.iterdir())
        seconds += bench.run(["zstd", "-3", "-T2", "-q", "--rm", *files], name="pg_dump_dir_zstd")
        label = "pg_dump_dir_zstd"
        size = sum(path.stat().st_size for path in folder.iterdir())
        bench.extra.setdefault("sizes", {})[label] = size
    bench.record(f"{label}_s", seconds)
    shutil.rmtree(folder)


def pg_restore_jobs(bench: Bench, raw_file: Path, label: str = "raw_restore") -> None:
    """``createdb`` + ``pg_restore -j 2`` of the uncompressed file (its drop untimed),
    recorded as ``{label}_s``."""
    started = time.perf_counter()
    name = bench.new_database("raw")
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
    bench.run(argv, name=label)
    bench.record(f"{label}_s", time.perf_counter() - started)
    drop_database(name)


def pg_restore_stream(bench: Bench, raw_file: Path) -> None:
    """``createdb`` + ``cat file | pg_restore``: one stream, as a restore from S3 is."""
    started = time.perf_counter()
    name = bench.new_database("raw")
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
        bench.run(argv, name="raw_stream_restore", stdin=cat.stdout)
    finally:
        cat.stdout.close()
        cat.wait()
    bench.record("raw_stream_restore_s", time.perf_counter() - started)
    drop_database(name)


def template_copy(bench: Bench) -> None:
    """``CREATE DATABASE … TEMPLATE data STRATEGY FILE_COPY``, what ``restore :NAME`` does
    at best (its drop untimed)."""
    started = time.perf_counter()
    name = bench.new_database("copy", template=bench.db["data"])
    bench.record("template_copy_s", time.perf_counter() - started)
    drop_database(name)


# kept copies ------------------------------------------------------------------


def kept_copy_of(bench: Bench, job: dict[str, Any]) -> str:
    """The kept copy ``job`` (a restore with ``keep_copy``) made: its worker
    renames it into place once the job is recorded succeeded, before it drops
    the replaced database (which ``pgclone_job`` waited for)."""
    rows = execute(
        sql.SQL(
            "SELECT j.result->>'kept_copy', s.message FROM pgclone_job j "
            "JOIN pgclone_jobstep s ON s.job_id = j.id AND s.name = 'swap' WHERE j.id = {}"
        ).format(sql.Literal(job["id"])),
        bench.db["jobs"],
    )
    name, message = rows[0]
    if not name:
        raise RuntimeError(f"job {job['id']} kept no copy: {message}")
    return name


def restore_temp_step(bench: Bench, job: dict[str, Any], name: str) -> str:
    """Record how long ``job``'s ``restore_temp`` step took (the load, or the
    FILE_COPY of a kept copy) as ``{name}_restore_temp_s``; its message."""
    rows = execute(
        sql.SQL(
            "SELECT message, extract(epoch FROM finished_at - started_at) FROM pgclone_jobstep "
            "WHERE job_id = {} AND name = 'restore_temp'"
        ).format(sql.Literal(job["id"])),
        bench.db["jobs"],
    )
    message, seconds = rows[0]
    bench.record(f"{name}_restore_temp_s", float(seconds))
    return message


def require_kept_copy_used(bench: Bench, job: dict[str, Any], kept: str, name: str) -> None:
    """A restore timed as one from the kept copy must have copied it (the server
    is shared: another's eviction could have dropped it)."""
    message = restore_temp_step(bench, job, name)
    if f"from the kept copy {kept} " not in message:
        raise RuntimeError(f"job {job['id']} did not restore from {kept}: {message}")


def checkpoint(bench: Bench, label: str) -> None:
    """``psql -c CHECKPOINT``, recorded as ``{label}_s``."""
    argv = ["psql", "-X", "-d", "postgres", "-c", "CHECKPOINT"]
    bench.record(f"{label}_s", bench.run(argv, name=label))


def file_copy(bench: Bench, template: str, label: str = "kept_file_copy") -> None:
    """``psql -c 'CREATE DATABASE … TEMPLATE template STRATEGY FILE_COPY'`` (its drop
    untimed), recorded as ``{label}_s``: by default what a copy of a kept copy
    costs at best."""
    name = bench.db["copy"]
    drop_database(name)
    bench.databases.add(name)
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
        sql.Identifier(name), sql.Identifier(template)
    )
    argv = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", _as_text(statement)]
    bench.record(f"{label}_s", bench.run(argv, name=label))
    drop_database(name)


def _as_text(statement: sql.Composable) -> str:
    with contextlib.closing(connect()) as conn:
        return statement.as_string(conn)
