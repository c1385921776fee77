"""The bench's targets, as data.

``TARGETS`` is the one place a target's limit is stated: the report's
pass/fail rows (``evaluate``) and the targets table of ``docs/benchmarks.md``
(``write_docs_table``, ``python -m bench --write-docs-table``) are both made
from it, so the two cannot disagree.

A target compares a value computed from the run's samples (a ``Measure``:
most are the ratio of two medians, the pair compared) with its limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measures import (
    Growth,
    Largest,
    Measure,
    Measured,
    Median,
    Peak,
    Ratio,
    RatioToSum,
    SizeRatio,
    WithoutPart,
    fmt,
    ratio,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START = "<!-- targets:start -->"
END = "<!-- targets:end -->"


@dataclass(frozen=True)
class Target:
    """A row of the report and of the docs' table."""

    name: str
    measures: str  # what is measured, in words, for the docs
    value: Measure
    limit: float
    unit: str
    at_least: bool = False  # met when the value is at least the limit, not at most
    detail: Callable[[Measured], str] | None = None  # the report's; else the measure's

    @property
    def op(self) -> str:
        return ">=" if self.at_least else "<="

    def evaluate(self, m: Measured) -> dict[str, Any]:
        """The report's row: the value, whether it meets the limit, and a detail."""
        value = self.value(m)
        detail = self.detail(m) if self.detail else self.value.detail(m)
        if value is None:
            met, detail = None, detail or "not measured"
        else:
            met = value >= self.limit if self.at_least else value <= self.limit
            value = round(value, 3)
        return {
            "target": self.name,
            "value": value,
            "limit": self.limit,
            "unit": self.unit,
            "met": met,
            "detail": detail,
        }


def _restore_detail(m: Measured) -> str:
    return (
        f"{fmt(m.median('pgclone_restore_s'))} s vs {fmt(m.median('raw_restore_s'))} s; the job "
        f"alone {fmt(m.median('pgclone_restore_job_s'))} s"
    )


def _directory_dump_detail(m: Measured) -> str:
    dump, alone = m.median("pgclone_dump_s"), m.median("pg_dump_dir_s")
    return (
        f"{fmt(dump)} s vs {fmt(m.median('pg_dump_dir_zstd_s'))} s; against "
        f"`pg_dump -Fd -j 2 -Z0` alone ({fmt(alone)} s) {fmt(ratio(dump, alone))} x; the job "
        f"alone {fmt(m.median('pgclone_dump_job_s'))} s"
    )


def _raw_restore_detail(label: str, raw_sample: str = "raw_restore_s") -> Callable[[Measured], str]:
    """The detail of a restore measured against ``pg_restore -j 2`` (``raw_sample``):
    both ways of timing it."""

    def detail(m: Measured) -> str:
        raw = m.median(raw_sample)
        job, whole = m.median(f"{label}_job_s"), m.median(f"{label}_s")
        return (
            f"the job {fmt(job)} s, end to end {fmt(whole)} s ({fmt(ratio(whole, raw))} x) "
            f"vs {fmt(raw)} s"
        )

    return detail


def _local_restore_detail(m: Measured) -> str:
    job, copy = m.median("local_restore_job_s"), m.median("template_copy_s")
    return (
        f"{fmt(m.median('local_restore_s'))} s vs {fmt(copy)} s; the job "
        f"alone {fmt(job)} s ({fmt(ratio(job, copy))} x)"
    )


def _from_kept_detail(m: Measured) -> str:
    whole, local = m.median("kept_from_restore_s"), m.median("kept_local_restore_s")
    return (
        f"{fmt(whole)} s vs {fmt(local)} s; without the kept copy "
        f"{fmt(m.median('kept_plain_restore_s'))} s"
    )


def _from_kept_job_detail(m: Measured) -> str:
    job, copy = m.median("kept_from_restore_job_s"), m.median("kept_file_copy_s")
    return (
        f"the job {fmt(job)} s vs {fmt(copy)} s; `restore :NAME`'s job "
        f"{fmt(m.median('kept_local_restore_job_s'))} s"
    )


def _swap_detail(m: Measured) -> str:
    return (
        f"median {fmt(m.median('swap_gap_ms'))} ms; pgclone's own window median "
        f"{fmt(m.median('swap_window_ms'))} ms"
    )


def _rss_detail(m: Measured) -> str:
    return (
        f"the worker's processes ({m.pool} pool), pg_dump/pg_restore excluded; "
        f"largest process {fmt(m.peak('_1x_task_rss_mb'))} MB, "
        f"PSS {fmt(m.peak('_1x_worker_pss_mb'))} MB, "
        f"idle {fmt(m.median('idle_worker0_worker_rss_mb'))} MB"
    )


def _growth_detail(m: Measured) -> str:
    peak_3x = m.peak("_3x_worker_rss_mb")
    paired_1x = m.peak("_1x_worker_rss_mb", prefix="paired_")
    if not peak_3x:
        return "3x size skipped"
    return f"3x jobs' peak {fmt(peak_3x)} MB, 1x jobs run beside them {fmt(paired_1x)} MB"


def _empty_dump_detail(m: Measured) -> str:
    return f"job itself {fmt(m.median('empty_dump_job_s'))} s"


def _enqueue_detail(m: Measured) -> str:
    return f"max {fmt(max(m.samples.get('enqueue_to_start_ms', [0])))} ms"


TARGETS: list[Target] = [
    Target(
        "dump / pg_dump -Z0 floor",
        "`pgclone dump --wait` to local storage, end to end, against `pg_dump -Fc -Z0 > /dev/null`",
        Ratio("pgclone_dump_s", "floor_dump_s"),
        1.4,
        "x",
    ),
    Target(
        "dump / pg_dump -Fd -j 2 -Z0 + zstd -3",
        "`pgclone dump --wait` to local storage, end to end, against `pg_dump -Fd -j 2 -Z0` "
        "into a folder followed by `zstd -3 -T2` of its files (the detail: against "
        "`pg_dump -Fd -j 2 -Z0` alone)",
        Ratio("pgclone_dump_s", "pg_dump_dir_zstd_s"),
        1.1,
        "x",
        detail=_directory_dump_detail,
    ),
    Target(
        "django-pgclone dump / pgclone dump",
        "django-pgclone 3.8's `pgclone dump` against pgclone's: how many times slower",
        Ratio("legacy_dump_s", "pgclone_dump_s"),
        3.0,
        "x",
        at_least=True,
    ),
    Target(
        "pgclone dump size / django-pgclone's",
        "pgclone's dump (zstd) against django-pgclone's (`pg_dump -Fc`, zlib), in bytes",
        SizeRatio("pgclone_dump", "legacy"),
        1.0,
        "x",
    ),
    Target(
        "restore (local) / pg_restore -j 2",
        "`pgclone restore KEY --wait` from local storage, end to end, against `createdb` + "
        "`pg_restore -j 2` of an uncompressed file",
        Ratio("pgclone_restore_s", "raw_restore_s"),
        1.1,
        "x",
        detail=_restore_detail,
    ),
    Target(
        "restore job (local) / pg_restore -j 2",
        "the restore job alone (first step started to last step finished), from local "
        "storage, against `createdb` + `pg_restore -j 2` of an uncompressed file",
        Ratio("pgclone_restore_job_s", "raw_restore_s"),
        1.05,
        "x",
        detail=_raw_restore_detail("pgclone_restore"),
    ),
    Target(
        "restore from S3 / pg_restore -j 2",
        "`pgclone restore KEY --wait` from S3 (moto), end to end, against `createdb` + "
        "`pg_restore -j 2` of a local uncompressed file, alternately in the restore round",
        Ratio("s3_restore_s", "raw_restore_s"),
        1.1,
        "x",
        detail=_raw_restore_detail("s3_restore"),
    ),
    Target(
        "restore job from S3 / pg_restore -j 2",
        "the restore job alone, from S3 (moto), against `createdb` + `pg_restore -j 2` of a "
        "local uncompressed file",
        Ratio("s3_restore_job_s", "raw_restore_s"),
        1.05,
        "x",
        detail=_raw_restore_detail("s3_restore"),
    ),
    Target(
        "restore from S3 / restore (local)",
        "`pgclone restore KEY --wait` from S3 (moto) against the same restore from local "
        "storage, end to end, alternately in the restore round",
        Ratio("s3_restore_s", "pgclone_restore_s"),
        1.05,
        "x",
    ),
    Target(
        "one-big-table restore job / pg_restore -j 2",
        "a database whose events table holds ~80% of the bytes: the restore job alone, from "
        "local storage, against `createdb` + `pg_restore -j 2` of its uncompressed file "
        "(which loads a table in one session)",
        Ratio("one_table_restore_job_s", "one_table_raw_restore_s"),
        1.0,
        "x",
        detail=_raw_restore_detail("one_table_restore", "one_table_raw_restore_s"),
    ),
    Target(
        "django-pgclone restore / pgclone restore",
        "django-pgclone's `pgclone restore KEY` against pgclone's restore from local "
        "storage: how many times slower",
        Ratio("legacy_restore_s", "pgclone_restore_s"),
        1.2,
        "x",
        at_least=True,
    ),
    Target(
        "encrypted dump / plain dump",
        "`pgclone dump --wait` with `PGCLONE_ENCRYPTION_RECIPIENTS` set (age, after zstd) "
        "against the same dump without, alternately, to local storage",
        Ratio("encrypted_dump_s", "plain_dump_s"),
        1.1,
        "x",
    ),
    Target(
        "encrypted restore / plain restore",
        "`pgclone restore KEY --wait` of an encrypted dump (decrypted as it streams) "
        "against the plain one's, alternately, from local storage",
        Ratio("encrypted_restore_s", "plain_restore_s"),
        1.1,
        "x",
    ),
    Target(
        "scrubbed dump / plain dump",
        "`pgclone dump --config scrubbed --wait` (customers' name, email, profile token; "
        "events' payload session and note) against the plain dump, alternately, one worker",
        Ratio("scrubbed_dump_s", "sharing_plain_dump_s"),
        1.3,
        "x",
    ),
    Target(
        "scrubbed dump / its leak proof",
        "the scrubbed dump's time over that time less what it waited for its leak proof "
        "(the sample, the search where slower than the data, its end: the job's "
        "`leak_proof.seconds`)",
        WithoutPart("scrubbed_dump_s", "scrubbed_proof_s"),
        1.15,
        "x",
    ),
    Target(
        "scrubbed dump / pg_dump -Z0 floor",
        "`pgclone dump --config scrubbed --wait` against `pg_dump -Fc -Z0 > /dev/null`, "
        "alternately in the sharing round",
        Ratio("scrubbed_dump_s", "sharing_floor_dump_s"),
        2.0,
        "x",
    ),
    Target(
        "subset dump / pg_dump -Z0 floor",
        "`pgclone dump --config subset --wait` against `pg_dump -Fc -Z0 > /dev/null`, "
        "alternately in the sharing round",
        Ratio("subset_dump_s", "sharing_floor_dump_s"),
        0.65,
        "x",
    ),
    Target(
        "scrubbed dump peak RSS above plain dump's",
        "the worker's peak RSS in the scrubbed dumps, less its peak in the plain dumps "
        "they alternate with",
        Growth(
            Peak("_1x_worker_rss_mb", prefix="scrubbed_dump"),
            Peak("_1x_worker_rss_mb", prefix="sharing_plain_dump"),
        ),
        10,
        "MB",
    ),
    Target(
        "subset dump / plain dump",
        "`pgclone dump --config subset --wait` (10% of customers, their orders, items and "
        "events, the products they reference) against the plain dump, alternately",
        Ratio("subset_dump_s", "sharing_plain_dump_s"),
        0.35,
        "x",
    ),
    Target(
        "subset dump size / plain dump's",
        "the subset dump's stored bytes against the plain dump's",
        SizeRatio("subset_dump", "sharing_plain_dump"),
        0.25,
        "x",
    ),
    Target(
        "subset restore / plain restore",
        "`pgclone restore KEY --wait` of the subset dump against the plain dump's, "
        "alternately, from local storage",
        Ratio("subset_restore_s", "sharing_plain_restore_s"),
        0.3,
        "x",
    ),
    Target(
        "restore from S3 / single-stream pg_restore",
        "a restore from S3 (moto) against `createdb` + `cat file \\| pg_restore`, "
        "alternately in the restore round",
        Ratio("s3_restore_s", "raw_stream_restore_s"),
        1.2,
        "x",
    ),
    Target(
        "restore :NAME / CREATE DATABASE ... TEMPLATE",
        "`pgclone restore :DATA --wait` against "
        "`CREATE DATABASE … TEMPLATE DATA STRATEGY FILE_COPY`",
        Ratio("local_restore_s", "template_copy_s"),
        1.2,
        "x",
        detail=_local_restore_detail,
    ),
    Target(
        "restore from a kept copy / restore :NAME",
        "`pgclone restore KEY --wait` of a dump whose kept copy exists, end to end, against "
        "`pgclone restore :DATA --wait` of the same data, alternately in the kept round",
        Ratio("kept_from_restore_s", "kept_local_restore_s"),
        1.1,
        "x",
        detail=_from_kept_detail,
    ),
    Target(
        "restore job from a kept copy / FILE_COPY",
        "that restore's job alone against `psql -c 'CREATE DATABASE … TEMPLATE kept "
        "STRATEGY FILE_COPY'` of the kept copy",
        Ratio("kept_from_restore_job_s", "kept_file_copy_s"),
        1.5,
        "x",
        detail=_from_kept_job_detail,
    ),
    Target(
        "restore without a kept copy / restore from it",
        "`pgclone restore KEY --wait` of a dump that has no kept copy against the same "
        "restore of a dump of the same data that has one: how many times faster the copy is",
        Ratio("kept_plain_restore_s", "kept_from_restore_s"),
        8.0,
        "x",
        at_least=True,
    ),
    Target(
        "copy KEY NEWNAME / FILE_COPY + start-up",
        "`pgclone copy KEY NEWNAME --wait` of a dump whose kept copy exists against that "
        "FILE_COPY plus a command's start-up (`manage.py pgclone jobs --limit 1`)",
        RatioToSum("kept_copy_s", ("kept_file_copy_s", "kept_startup_s")),
        1.2,
        "x",
    ),
    Target(
        "first restore keeping a copy / restore + CHECKPOINT + FILE_COPY",
        "a restore with `keep_copy: true` of a dump without a kept copy against the same "
        "restore without keeping plus a `CHECKPOINT` and a FILE_COPY of the restored "
        "database, each run and timed at once after it",
        RatioToSum(
            "kept_first_restore_s",
            ("kept_plain_restore_s", "kept_checkpoint_s", "kept_fresh_file_copy_s"),
        ),
        1.0,
        "x",
    ),
    Target(
        "longest swap gap (max over restores)",
        "the longest time between two successful queries of a client reconnecting "
        "to the target every 5 ms, over the swap round's restores",
        Largest("swap_gap_ms"),
        100,
        "ms",
        detail=_swap_detail,
    ),
    Target(
        "worker peak RSS (1x, all jobs)",
        "the summed RSS of the Celery worker's processes (not `pg_dump`/`pg_restore`), "
        "peak over every job on the 1x database",
        Peak("_1x_worker_rss_mb"),
        150,
        "MB",
        detail=_rss_detail,
    ),
    Target(
        "worker peak RSS growth 3x vs 1x",
        "the worker's peak RSS in jobs on the 3x database, less its peak in the 1x jobs "
        "run just before them",
        Growth(Peak("_3x_worker_rss_mb"), Peak("_1x_worker_rss_mb", prefix="paired_")),
        10,
        "MB",
        detail=_growth_detail,
    ),
    Target(
        "empty database dump, end to end",
        "`pgclone dump --wait` of an empty database: the fixed cost of a job",
        Median("empty_dump_s"),
        1.5,
        "s",
        detail=_empty_dump_detail,
    ),
    Target(
        "enqueue to start (median)",
        "a job's `created_at` to its first step's `started_at`, over every pgclone job",
        Median("enqueue_to_start_ms"),
        100,
        "ms",
        detail=_enqueue_detail,
    ),
]
BY_NAME = {target.name: target for target in TARGETS}


def evaluate(m: Measured) -> list[dict[str, Any]]:
    """The report's target rows, in the table's order."""
    return [target.evaluate(m) for target in TARGETS]


# The docs' table --------------------------------------------------------------


def docs_table() -> str:
    """The targets table of ``docs/benchmarks.md``, in the report's words and limits."""
    lines = [
        "| target | what is measured | limit | computed from |",
        "| --- | --- | --- | --- |",
    ]
    for t in TARGETS:
        lines.append(
            f"| {t.name} | {t.measures} | {t.op} {t.limit} {t.unit} | {t.value.describe()} |"
        )
    return "\n".join(lines)


def write_docs_table(path: Path = DOCS) -> bool:
    """Rewrite the block between the targets markers of ``path``, leaving the
    rest as it is; whether anything changed."""
    text = path.read_text()
    pattern = re.compile(rf"{re.escape(START)}.*?{re.escape(END)}", re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {START} ... {END} block")
    block = f"{START}\n{docs_table()}\n{END}"
    updated = pattern.sub(lambda _: block, text, count=1)
    if updated == text:
        return False
    path.write_text(updated)
    return True
