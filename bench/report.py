"""The report of a run: its targets (``bench/targets.py``), medians, samples and machine,
as JSON and as the Markdown printed at the end and kept in ``bench/results/``."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
from pathlib import Path
from typing import Any

from bench import targets
from bench.measures import Measured, fmt
from bench.postgres import server_version
from bench.session import Bench


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    memory = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(memory / 1024**3, 1),
        "postgresql": server_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def report(bench: Bench) -> dict[str, Any]:
    """The run's results, every sample kept: the JSON file is this."""
    measured = Measured(bench.samples, bench.extra.get("sizes", {}), bench.pool)
    rows = targets.evaluate(measured)
    medians = {name: round(statistics.median(values), 4) for name, values in bench.samples.items()}
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "session": bench.session,  # what its databases, workers and files are named after
        "machine": machine(),
        "size_requested_bytes": bench.size,
        "reps": bench.reps,
        "pool": bench.pool,
        "tiny": bench.tiny,
        "variants": bench.variants,
        "targets": rows,
        "medians": medians,
        "samples": {name: [round(v, 4) for v in values] for name, values in bench.samples.items()},
        "extra": bench.extra,
        "notes": bench.notes,
    }


def _target_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        "| target | limit | measured | met | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["targets"]:
        op = targets.BY_NAME[row["target"]].op
        unit = row["unit"]
        met = {True: "met", False: "**missed**", None: "n/a"}[row["met"]]
        lines.append(
            f"| {row['target']} | {op} {row['limit']} {unit} | {fmt(row['value'])} {unit} "
            f"| {met} | {row['detail']} |"
        )
    return lines


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
        *_target_lines(report),
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
    lines += _subset_lines(extra.get("subset_rows") or {})
    for note in report["notes"]:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def _subset_lines(kept: dict[str, dict[str, Any]]) -> list[str]:
    """What the sharing round's subset dump kept of each table."""
    if not kept:
        return []
    lines = ["", "Subset dump (10% of customers), rows kept per table:", ""]
    lines += ["| table | kept | of | share |", "| --- | --- | --- | --- |"]
    for table, rows in kept.items():
        of = rows.get("of")
        share = f"{rows['kept'] / of:.1%}" if of else "-"
        lines.append(f"| {table} | {rows['kept']:,} | {f'{of:,}' if of else '-'} | {share} |")
    return lines


def write_results(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``bench-<time>.md`` and ``.json`` in ``out``, each also copied to ``latest.*``."""
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
