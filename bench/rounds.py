"""The rounds of a run: which contenders are measured against which, and in what order.

Contenders of a round alternate (``Bench.alternate``), so page cache and
background work fall on all of them alike; the rounds that measure one
thing only (the swap gap, the fixed costs, the 3x memory) run on their own.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import contenders, django_pgclone
from bench.harness import log
from bench.kept_round import kept_round
from bench.postgres import build_database, drop_database
from bench.session import BENCH, Bench, Worker
from bench.sharing_round import sharing_round


def dump_round(bench: Bench, main: Worker) -> str:
    """pgclone's dump (and each variant's) against the floor, pg_dump's own
    parallel dump (``-Fd -j 2``, alone and followed by zstd) and django-pgclone;
    the key of pgclone's last dump, for the restore round."""
    keys: dict[str, str] = {}

    def pgclone_dump(worker: Worker, label: str) -> Callable[[], None]:
        def go() -> None:
            job = contenders.pgclone_job(
                bench, label, ["dump", "--database", "data"], worker, memory=f"{label}_1x"
            )
            # A baseline's dump under its prefix: the restore round restores
            # this pgclone's dump, and the size target measures it.
            keys[worker.prefix + label] = job["key"]
            bench.extra.setdefault("sizes", {})[worker.prefix + label] = job["result"].get("size")
            if not worker.prefix:
                bench.extra["sizes"]["raw"] = job["result"].get("raw_size")

        return go

    def legacy() -> None:
        keys["legacy"] = django_pgclone.dump(bench)

    runs = [
        ("pgclone dump", pgclone_dump(main, "pgclone_dump")),
        ("pg_dump floor", lambda: contenders.pg_dump_floor(bench)),
        ("pg_dump -Fd -j 2", lambda: contenders.pg_directory_dump(bench, compress=False)),
        ("pg_dump -Fd -j 2 + zstd", lambda: contenders.pg_directory_dump(bench, compress=True)),
    ]
    for worker in bench.workers[1:]:
        runs.append((f"pgclone dump {worker.label}", pgclone_dump(worker, f"dump[{worker.label}]")))
    for worker in bench.baseline_workers:
        runs.append((f"pgclone dump {worker.label}", pgclone_dump(worker, "pgclone_dump")))
    if bench.legacy_python:
        runs.append(("django-pgclone dump", legacy))
    bench.alternate(runs)
    bench.extra["legacy_key"] = keys.get("legacy")
    return keys["pgclone_dump"]


def restore_round(bench: Bench, main: Worker, keys: dict[str, str], raw_file: Path) -> None:
    """pgclone's restore from local storage and from S3 (``keys``: each one's
    dump) against ``pg_restore -j 2`` of a local uncompressed file, a
    single-stream ``pg_restore`` fed from a pipe and django-pgclone, alternately."""
    s3_worker = bench.with_settings(main, "s3", s3_storage(bench))

    def pgclone(worker: Worker, label: str, key: str) -> Callable[[], None]:
        return lambda: contenders.pgclone_job(
            bench,
            label,
            ["restore", key, "--database", "target"],
            worker,
            memory=f"{label}_1x",
        )

    runs = [
        ("pgclone restore", pgclone(main, "pgclone_restore", keys["local"])),
        ("pgclone restore from S3", pgclone(s3_worker, "s3_restore", keys["s3"])),
        ("pg_restore -j 2", lambda: contenders.pg_restore_jobs(bench, raw_file)),
        ("pg_restore | single stream", lambda: contenders.pg_restore_stream(bench, raw_file)),
    ]
    for worker in bench.workers[1:]:
        label = f"restore[{worker.label}]"
        runs.append((f"pgclone restore {worker.label}", pgclone(worker, label, keys["local"])))
    if bench.legacy_python and bench.extra.get("legacy_key"):
        bench.new_database("legacy")
        runs.append(("django-pgclone restore", lambda: django_pgclone.restore(bench)))
    bench.alternate(runs)


def encryption_round(bench: Bench, main: Worker) -> None:
    """Dumps encrypted with age against plain ones, then restores of each, alternately
    and through the same worker (it holds the identity): what encryption costs."""
    encrypted = bench.with_settings(
        main, "encrypted", {"PGCLONE_ENCRYPTION_RECIPIENTS": bench.age_recipient}
    )
    keys: dict[str, str] = {}

    def dump(worker: Worker, label: str) -> Callable[[], None]:
        def go() -> None:
            job = contenders.pgclone_job(
                bench, f"{label}_dump", ["dump", "--database", "data"], worker,
                memory=f"{label}_dump_1x",
            )  # fmt: skip
            keys[label] = job["key"]

        return go

    def restore(worker: Worker, label: str) -> Callable[[], None]:
        return lambda: contenders.pgclone_job(
            bench, f"{label}_restore", ["restore", keys[label], "--database", "target"], worker,
            memory=f"{label}_restore_1x",
        )  # fmt: skip

    bench.alternate(
        [("plain dump", dump(main, "plain")), ("encrypted dump", dump(encrypted, "encrypted"))]
    )
    bench.alternate(
        [
            ("plain restore", restore(main, "plain")),
            ("encrypted restore", restore(encrypted, "encrypted")),
        ]
    )


def s3_storage(bench: Bench) -> dict[str, str]:
    return {"PGCLONE_STORAGE_LOCATION": f"s3://{bench.bucket}/dumps"}


def s3_dump(bench: Bench, main: Worker) -> str:
    """A dump to S3 (moto), for the restore round (one sample of ``s3_dump_s``)."""
    s3_worker = bench.with_settings(main, "s3", s3_storage(bench))
    job = contenders.pgclone_job(
        bench, "s3_dump", ["dump", "--database", "data"], s3_worker, memory="s3_dump_1x"
    )
    bench.extra["s3_key"] = job["key"]
    return job["key"]


def restore_only_round(bench: Bench, main: Worker) -> None:
    """The restore round alone (``--only restore``): its file and dumps made first."""
    raw_file = contenders.write_raw_file(bench)
    job = contenders.pgclone_job(
        bench, "pgclone_dump", ["dump", "--database", "data"], main, memory="pgclone_dump_1x"
    )
    restore_round(bench, main, {"local": job["key"], "s3": s3_dump(bench, main)}, raw_file)


def one_table_round(bench: Bench, main: Worker) -> None:
    """A database whose one table (the events) holds most of the data:
    pgclone's restore, which can load a table's ranges in several sessions,
    against ``pg_restore -j 2``, which loads a table in one."""
    role = "one_table"
    bench.databases.add(bench.db[role])
    bench.extra[role] = build_database(bench.db[role], bench.size, shape="one_big_table")
    raw_file = contenders.write_raw_file(bench, role)
    job = contenders.pgclone_job(
        bench, "one_table_dump", ["dump", "--database", role], main, memory="one_table_dump_1x"
    )

    def restore() -> None:
        contenders.pgclone_job(
            bench, "one_table_restore", ["restore", job["key"], "--database", "target"], main,
            memory="one_table_restore_1x",
        )  # fmt: skip

    bench.alternate(
        [
            ("pgclone restore, one big table", restore),
            (
                "pg_restore -j 2, one big table",
                lambda: contenders.pg_restore_jobs(bench, raw_file, label="one_table_raw_restore"),
            ),
        ]
    )
    drop_database(bench.db[role])
    raw_file.unlink()


def local_round(bench: Bench, main: Worker) -> None:
    """``restore :NAME`` against the template copy it is built on."""

    # Both copy files that must be on disk first: each starts from a fresh
    # checkpoint (Bench.alternate settles), so neither pays for what ran before.
    def pgclone() -> None:
        contenders.pgclone_job(
            bench,
            "local_restore",
            ["restore", f":{bench.db['data']}", "--database", "target"],
            main,
            memory="local_restore_1x",
        )

    bench.alternate(
        [
            ("pgclone restore :NAME", pgclone),
            ("CREATE DATABASE ... TEMPLATE", lambda: contenders.template_copy(bench)),
        ]
    )


def swap_round(bench: Bench, main: Worker) -> None:
    """Restores with a client reconnecting every 5 ms to the database being
    replaced. Its connections cost CPU (a backend started every few ms), so
    it runs in restores of its own, not in the timed ones; a copy of
    ``data`` makes them short, and their swap is the same as any restore's."""
    for rep in range(max(bench.reps, 5)):
        for worker in in_turn(bench, main, rep):
            log(f"swap under a reconnecting client {rep + 1} ({worker.label})")
            contenders.pgclone_job(
                bench,
                "swap_restore",
                ["restore", f":{bench.db['data']}", "--database", "target"],
                worker,
                probe=True,
                memory="local_restore_1x",
            )


def in_turn(bench: Bench, main: Worker, rep: int) -> list[Worker]:
    """The main worker and the baselines' (``--baseline``), in an order that
    rotates with ``rep``: the rounds that run alone compare them this way."""
    workers = [main, *bench.baseline_workers]
    shift = rep % len(workers)
    return workers[shift:] + workers[:shift]


def overhead_round(bench: Bench, main: Worker) -> None:
    """The fixed costs: a command's startup, and dumps of an empty database."""
    bench.new_database("empty")
    for rep in range(max(bench.reps, 3)):
        for worker in in_turn(bench, main, rep):
            # What a command costs before any job: Python, Django, pgclone, the broker.
            bench.record(
                f"{worker.prefix}manage_py_startup_s",
                bench.manage("jobs", "--limit", "1", worker=worker, name="startup"),
            )
    for rep in range(max(bench.reps, 3)):
        for worker in in_turn(bench, main, rep):
            log(f"empty dump {rep + 1} ({worker.label})")
            contenders.pgclone_job(
                bench, "empty_dump", ["dump", "--database", "empty"], worker, memory="empty_dump"
            )


def triple_round(bench: Bench, main: Worker) -> None:
    """Peak memory at 1x and 3x, side by side: the worker's allocator history
    (it has run every earlier round) is then the same for both sizes."""
    bench.databases.add(bench.db["data3x"])
    bench.extra["data3x"] = build_database(bench.db["data3x"], bench.size * 3)
    s3_worker = bench.with_settings(main, "s3", s3_storage(bench))
    for label, worker in (("", main), ("s3_", s3_worker)):
        log(f"1x and 3x {label or 'local '}dumps and restores")
        for size, alias in (("1x", "data"), ("3x", "data3x")):
            # 1x jobs here are named paired_…: compared with the 3x ones beside them.
            prefix = "paired_" if size == "1x" else ""
            job = contenders.pgclone_job(
                bench,
                f"{prefix}{label}dump_{size}",
                ["dump", "--database", alias],
                worker,
                memory=f"{prefix}{label or 'pgclone_'}dump_{size}",
            )
            contenders.pgclone_job(
                bench,
                f"{prefix}{label}restore_{size}",
                ["restore", job["key"], "--database", "target"],
                worker,
                memory=f"{prefix}{label or 'pgclone_'}restore_{size}",
            )
    drop_database(bench.db["data3x"])


def execute_all(bench: Bench) -> None:
    """Set everything up, run every round, and remove all of it, even on failure."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.callback(bench.cleanup)
        bench.work.mkdir(parents=True)
        (bench.work / "tmp").mkdir()
        bench.compile_packages()
        for role in ("jobs", "target"):
            bench.new_database(role)
        bench.run(
            [sys.executable, str(BENCH / "manage.py"), "migrate", "--verbosity", "0"],
            env=bench.base_env(),
            name="migrate",
        )
        bench.databases.add(bench.db["data"])
        bench.extra["data"] = build_database(bench.db["data"], bench.size)
        if bench.with_legacy:
            bench.legacy_python = django_pgclone.install(bench)
        bench.start_moto(stack)
        main = bench.start_worker(stack, "default", {})
        for variant in bench.variants:
            label = ",".join(f"{k}={v}" for k, v in variant.items())
            bench.start_worker(stack, label, variant)
        for checkout in bench.baselines:
            bench.start_baseline(stack, checkout)
        if bench.only:
            for name in bench.only:
                ONE_ROUND[name](bench, main)
        else:
            raw_file = contenders.write_raw_file(bench)
            keys = {"local": dump_round(bench, main), "s3": s3_dump(bench, main)}
            restore_round(bench, main, keys, raw_file)
            encryption_round(bench, main)
            sharing_round(bench, main)
            one_table_round(bench, main)
            local_round(bench, main)
            kept_round(bench, main)
            swap_round(bench, main)
            overhead_round(bench, main)
            if bench.with_3x:
                triple_round(bench, main)
    bench.extra["total_seconds"] = round(time.perf_counter() - started, 1)


# The rounds ``python -m bench --only ROUND`` runs (those that need no other's results).
ONE_ROUND = {
    "dump": dump_round,
    "restore": restore_only_round,
    "one_table": one_table_round,
    "encryption": encryption_round,
    "sharing": sharing_round,
    "swap": swap_round,
    "overhead": overhead_round,
    "kept": kept_round,
}
ROUNDS = tuple(ONE_ROUND)
