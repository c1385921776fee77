"""What each phase of a dump and a restore costs in CPU, per byte: the figures
docs/benchmarks.md scales to 16 and 64 cores on paper.

Run: ``.venv/bin/python -m bench.phases --size 300MB``. It builds a bench
database, then times, one at a time and in one session each, what pgclone's
dump and restore are made of: the server's ``COPY … TO STDOUT`` of every
table, zstd level 3 over that text, SHA-256 over the compressed bytes, zstd
decompression, the server's ``COPY … FROM STDIN`` into empty tables (with the
WAL it writes) and each index and foreign key of the schema. CPU time is
counted, not only wall time: the server backend's from ``/proc`` (the server
must run on this host), this process's from ``time.process_time``, so the
rates hold on a busy machine too. Then it runs pgclone's own dump and
restore of that database (``--inline``, the bench project, default settings)
while it samples the CPU of each of the command's threads: the busiest
thread is the part of the job that more cores cannot share. It drops every
database and folder it made at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zstandard

from bench import postgres, schema
from bench.run import parse_size

TICKS = os.sysconf("SC_CLK_TCK")


def _backend_cpu(pid: int) -> float:
    """CPU-seconds a server process has used (user + system)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextlib.contextmanager
def _timed(conn: Any, row: dict[str, float]) -> Iterator[None]:
    """Wall time, the session's backend CPU and this process's CPU of a block."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    wall, server, client = time.perf_counter(), _backend_cpu(pid), time.process_time()
    yield
    row["wall_s"] = row.get("wall_s", 0.0) + time.perf_counter() - wall
    row["server_cpu_s"] = row.get("server_cpu_s", 0.0) + _backend_cpu(pid) - server
    row["client_cpu_s"] = row.get("client_cpu_s", 0.0) + time.process_time() - client


def _local(step: Callable[[], Any], row: dict[str, float]) -> Any:
    client, wall = time.process_time(), time.perf_counter()
    result = step()
    row["wall_s"] = time.perf_counter() - wall
    row["client_cpu_s"] = time.process_time() - client
    return result


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """Each live thread of a process: its name and CPU-seconds so far."""
    found = {}
    with contextlib.suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                    head, rest = stat.read().rsplit(")", 1)
                fields = rest.split()
                cpu = (int(fields[11]) + int(fields[12])) / TICKS
                found[int(tid)] = (head.split("(", 1)[1], cpu)
    return found


def run_sampled(argv: list[str], env: dict[str, str], phase: str, raw: int) -> dict[str, Any]:
    """Run a pgclone command; its wall time, its own CPU, its children's
    (psql, pg_dump, pg_restore) and its busiest thread's, sampled every 20 ms."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    seen: dict[int, tuple[str, float]] = {}
    whole = 0.0
    while process.poll() is None:
        seen.update(_threads(process.pid))
        with contextlib.suppress(FileNotFoundError):
            whole = max(whole, _backend_cpu(process.pid))
        time.sleep(0.02)
    row: dict[str, Any] = {"phase": phase, "bytes": raw, "wall_s": time.perf_counter() - wall}
    if process.returncode:
        raise SystemExit(f"{' '.join(argv)} exited with {process.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    busiest = sorted(seen.values(), key=lambda named: -named[1])[:3]
    row.update(
        client_cpu_s=spent,
        process_cpu_s=whole,
        busiest=", ".join(f"{name} {cpu:.2f}" for name, cpu in busiest),
        busiest_cpu_s=busiest[0][1],
    )
    return row


def pgclone_jobs(source: str, target: str, jobs_db: str, raw: int) -> list[dict[str, Any]]:
    """pgclone's own dump of ``source`` and restore of it into ``target``."""
    here = Path(__file__).resolve().parent
    work = Path(tempfile.mkdtemp(prefix="pgclone-bench-phases-"))
    env = {
        **postgres.pg_env(),
        "PYTHONPATH": str(here.parent),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_JOBS_DB": jobs_db,
        "BENCH_DATA_DB": source,
        "BENCH_TARGET_DB": target,
        "PGCLONE_STORAGE_LOCATION": str(work / "dumps"),
        "PGCLONE_TEMP_DIR": str(work),
    }
    manage = [sys.executable, str(here / "manage.py")]
    try:
        subprocess.run([*manage, "migrate", "--verbosity", "0"], env=env, check=True)
        start = run_sampled([*manage, "pgclone", "jobs"], env, "pgclone jobs (start-up)", 0)
        dump = run_sampled(
            [*manage, "pgclone", "dump", "--database", "data", "--inline"],
            env, "pgclone dump --inline (whole command)", raw,
        )  # fmt: skip
        key = next(path for path in (work / "dumps").rglob("*.dump"))
        restore = run_sampled(
            [*manage, "pgclone", "restore", str(key.relative_to(work / "dumps")),
             "--database", "target", "--inline", "--noinput"],
            env, "pgclone restore --inline (whole command)", raw,
        )  # fmt: skip
        return [start, dump, restore]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tables(conn: Any) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'public' ORDER BY relname"
        )
        return [name for (name,) in cur.fetchall()]


def measure(source: str, target: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    text: dict[str, bytes] = {}
    copy_out: dict[str, Any] = {"phase": "COPY out (server, one session)"}
    with contextlib.closing(postgres.connect(source)) as conn:
        for table in _tables(conn):
            out = io.BytesIO()
            with _timed(conn, copy_out), conn.cursor() as cur:
                cur.copy_expert(f'COPY public."{table}" TO STDOUT', out)
            text[table] = out.getvalue()
    raw = sum(len(data) for data in text.values())
    copy_out["bytes"] = raw
    rows.append(copy_out)

    whole = b"".join(text.values())
    compress: dict[str, Any] = {"phase": "zstd -3 compress (one thread)", "bytes": raw}
    packed = _local(lambda: zstandard.ZstdCompressor(level=3).compress(whole), compress)
    rows.append(compress)
    digest: dict[str, Any] = {"phase": "SHA-256 of the compressed bytes", "bytes": len(packed)}
    _local(lambda: hashlib.sha256(packed).digest(), digest)
    rows.append(digest)
    unpack: dict[str, Any] = {"phase": "zstd decompress (one frame, one thread)", "bytes": raw}
    _local(lambda: zstandard.ZstdDecompressor().decompress(packed, max_output_size=raw), unpack)
    rows.append(unpack)

    postgres.execute(schema.TABLES, target)
    copy_in: dict[str, Any] = {"phase": "COPY in (server, one session, no index)", "bytes": raw}
    with contextlib.closing(postgres.connect(target)) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()")
            start = cur.fetchone()[0]
        for table, data in text.items():
            with _timed(conn, copy_in), conn.cursor() as cur:
                cur.copy_expert(f'COPY public."{table}" FROM STDIN', io.BytesIO(data))
        with conn.cursor() as cur:
            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (start,))
            copy_in["wal_bytes"] = cur.fetchone()[0]
        rows.append(copy_in)
        with conn.cursor() as cur:
            cur.execute("SET maintenance_work_mem = '256MB'")
        for statement in schema.INDEXES:
            built: dict[str, Any] = {"phase": f"post-data: {statement.split(' ON ')[0]}"}
            if " ON " not in statement:
                built["phase"] = f"post-data: {statement[:60]}"
            with _timed(conn, built), conn.cursor() as cur:
                cur.execute(statement)
            rows.append(built)
    return rows


def report(rows: list[dict[str, Any]], size: int) -> str:
    lines = [
        f"Database of {size / 1e6:.0f} MB; COPY text {rows[0]['bytes'] / 2**20:.1f} MiB.",
        "",
        "| phase | MiB | wall s | server CPU s | client CPU s | MiB per CPU-s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "busiest" in row:
            continue
        cpu = row.get("server_cpu_s", 0.0) + row.get("client_cpu_s", 0.0)
        mib = row.get("bytes", 0) / 2**20
        rate = f"{mib / cpu:.0f}" if mib and cpu else ""
        lines.append(
            f"| {row['phase']} | {mib:.1f} | {row['wall_s']:.2f} | "
            f"{row.get('server_cpu_s', 0.0):.2f} | {row.get('client_cpu_s', 0.0):.2f} | {rate} |"
        )
    lines += [
        "",
        "| pgclone command | wall s | CPU s, the command | CPU s, with its programs "
        "| busiest threads, CPU s | MiB per busiest thread's CPU-s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "busiest" in row:
            rate = f"{row['bytes'] / 2**20 / row['busiest_cpu_s']:.0f}" if row["bytes"] else ""
            lines.append(
                f"| {row['phase']} | {row['wall_s']:.2f} | {row['process_cpu_s']:.2f} | "
                f"{row['client_cpu_s']:.2f} | {row['busiest']} | {rate} |"
            )
    wal = next(row["wal_bytes"] for row in rows if "wal_bytes" in row)
    lines += ["", f"WAL written by the COPY in: {wal / 2**20:.1f} MiB."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("300MB"))
    args = parser.parse_args()
    session = uuid.uuid4().hex[:8]
    names = [f"pgclone_bench_{session}_phases{suffix}" for suffix in ("", "_in", "_jobs", "_to")]
    source, target, jobs_db, restored = names
    try:
        postgres.build_database(source, args.size)
        postgres.create_database(target)
        postgres.create_database(jobs_db)
        postgres.create_database(restored)
        rows = measure(source, target)
        rows += pgclone_jobs(source, restored, jobs_db, rows[0]["bytes"])
        print(report(rows, args.size))
    finally:
        for name in names:
            postgres.drop_database(name)


if __name__ == "__main__":
    main()
