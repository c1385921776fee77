"""The bench in tiny mode: it runs end to end and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTENDERS = (
    "pgclone_dump_s",
    "floor_dump_s",
    "pg_dump_dir_s",
    "pg_dump_dir_zstd_s",
    "pgclone_restore_s",
    "raw_restore_s",
    "s3_dump_s",
    "s3_restore_s",
    "s3_restore_job_s",
    "raw_stream_restore_s",
    "one_table_dump_s",
    "one_table_restore_s",
    "one_table_raw_restore_s",
    "local_restore_s",
    "template_copy_s",
    "sharing_plain_dump_s",
    "scrubbed_dump_s",
    "subset_dump_s",
    "sharing_floor_dump_s",
    "scrubbed_proof_s",
    "sharing_plain_restore_s",
    "subset_restore_s",
    "swap_gap_ms",
    "empty_dump_s",
    "enqueue_to_start_ms",
    "manage_py_startup_s",
    "kept_plain_restore_s",
    "kept_checkpoint_s",
    "kept_first_restore_s",
    "kept_from_restore_s",
    "kept_from_restore_job_s",
    "kept_local_restore_s",
    "kept_file_copy_s",
    "kept_copy_s",
    "kept_startup_s",
)


def _all_databases() -> set[str]:
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SELECT datname FROM pg_database"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def _bench_databases() -> set[str]:
    return {name for name in _all_databases() if name.startswith("pgclone_bench_")}


def _kept_copies_of(session: str) -> list[str]:
    """The kept copies whose mark names that run's storage (its work folder)."""
    query = (
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname LIKE 'pgclone\\_kept\\_%'"
    )
    argv = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-AtF", "\t", "-c", query]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    work = f"/bench/.work/{session}/"
    return [line.split("\t")[0] for line in out.splitlines() if work in line]


def _processes_of(session: str) -> dict[int, bytes]:
    """The live processes that bench run started, however deep: the bench gives
    each (its workers and their pool processes, moto) its session in the
    environment. Another test run's moto server or worker is not the bench's."""
    tag = f"BENCH_SESSION={session}\0".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()  # empty for a zombie
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue  # gone meanwhile, or not ours to read
            if environ.startswith(tag) or b"\0" + tag in environ:
                found[int(entry.name)] = cmdline[:200]
    return found


def test_tiny_bench_writes_a_row_per_contender(tmp_path: Path) -> None:
    databases = _bench_databases()
    work = ROOT / "bench" / ".work"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}

    result = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    [md_file] = [p for p in tmp_path.glob("bench-*-tiny.md")]
    [json_file] = [p for p in tmp_path.glob("bench-*-tiny.json")]
    report = json.loads(json_file.read_text())
    table = md_file.read_text()
    for name in CONTENDERS:
        assert report["samples"].get(name), f"no sample for {name}"
        assert f"| {name} |" in table
    assert any(key.endswith("_worker_rss_mb") for key in report["samples"])
    for row in report["targets"]:
        assert f"| {row['target']} |" in table
    # The subset kept a tenth of the customers, and what follows them.
    kept = report["extra"]["subset_rows"]
    assert set(kept) == {"customers", "orders", "order_items", "events", "products"}
    assert 0 < kept["customers"]["kept"] < kept["customers"]["of"]
    assert "| customers |" in table
    # Nothing left behind: databases, the worker, moto, the work files. Only this
    # run's count: another bench may run on the machine meanwhile.
    session = report["session"]
    assert {d for d in _bench_databases() - databases if f"_{session}_" in d} == set()
    assert _kept_copies_of(session) == [] and f"bench_{session}_copy" not in _all_databases()
    assert _processes_of(session) == {}
    assert not (work / session).exists()
