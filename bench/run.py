"""Run the pgclone benchmark: ``python -m bench [--size 1GB] [--reps 3] [--skip-3x] ...``.

Builds a shop database of the given size, then measures, each contender
several times and alternately in one run:

- dump: pgclone (``manage.py pgclone dump --wait`` through a real Celery
  worker), the floor ``pg_dump -Fc -Z0 > /dev/null``, ``pg_dump -Fd -j 2
  -Z0`` alone and followed by ``zstd -3`` of its files, django-pgclone 3.8;
- restore: pgclone from local storage and from S3 (moto), raw ``pg_restore
  -j 2`` of an uncompressed file into a new database, a single-stream
  ``pg_restore`` fed from a pipe, django-pgclone's restore;
- a database whose one table holds most of the data: pgclone's restore
  against ``pg_restore -j 2``;
- local restore (``restore :NAME``) against ``CREATE DATABASE ... TEMPLATE ...
  STRATEGY FILE_COPY``;
- kept copies: a restore from a dump's kept copy against ``restore :NAME``,
  the FILE_COPY it runs and the same restore without it; ``copy KEY
  NEWNAME``; the first restore that keeps a copy;
- the longest gap a client reconnecting every 5 ms sees during restores;
- the worker's peak memory, at the default size and three times it;
- fixed overhead: an empty database's dump, and enqueue-to-start latency.

It writes ``bench/results/bench-<time>.md`` and ``.json`` (and ``latest.*``),
and removes every database, process and file it made, even on failure.

This module is the command line; the parts it runs, each small enough to read:
``harness`` (processes, ports, timed commands), ``postgres`` (the bench's
databases), ``probes`` (memory and swap-gap sampling), ``session`` (one run's
names, services and cleanup), ``contenders`` and ``django_pgclone`` (what is
measured), ``rounds`` (what runs against what), ``targets`` (the limits, as
data) and ``report``.
"""

from __future__ import annotations

import argparse
import re
import signal
from pathlib import Path
from typing import Any

from bench import report, rounds, targets
from bench.harness import log
from bench.session import BENCH, Bench

RESULTS = BENCH / "results"
TINY_BYTES = 12 * 1024**2
DEFAULT_BYTES = 1024**3


def parse_size(text: str) -> int:
    if text == "tiny":
        return TINY_BYTES
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)B?", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"size like 1GB, 300MB or tiny, not {text!r}")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[match.group(2)]
    return int(float(match.group(1)) * scale)


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
        "--only",
        action="append",
        choices=rounds.ROUNDS,
        help="run this round only, or these if repeated, in the order given "
        "(the report marks the others' targets not measured)",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        type=Path,
        metavar="CHECKOUT",
        help="also run the pgclone of this checkout (a folder holding pgclone/) on a worker "
        "of its own, alternately with this one's, in the dump, swap and overhead rounds; "
        "its samples are named baseline_… (a second one's baseline2_…)",
    )
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
    parser.add_argument(
        "--write-docs-table",
        action="store_true",
        help="rewrite the targets table in docs/benchmarks.md from bench/targets.py, and exit",
    )
    return parser.parse_args(argv)


def parse_variants(texts: list[str]) -> list[dict[str, str]]:
    """``--variant`` values as settings; only pgclone's own may vary."""
    variants = []
    for text in texts:
        pairs = dict(item.split("=", 1) for item in text.split(","))
        if not all(name.startswith("PGCLONE_") for name in pairs):
            raise SystemExit(f"--variant takes PGCLONE_* settings, not {text!r}")
        variants.append(pairs)
    return variants


def baseline_checkouts(paths: list[Path]) -> list[Path]:
    """``--baseline``'s folders, if each holds a pgclone package."""
    for path in paths:
        if not (path / "pgclone" / "__init__.py").is_file():
            raise SystemExit(f"--baseline takes a checkout holding pgclone/, not {path}")
    return paths


def write_docs_table() -> int:
    """``--write-docs-table``: the docs state the limits ``bench/targets.py`` checks."""
    changed = targets.write_docs_table()
    log(f"{'rewrote' if changed else 'already up to date:'} the targets table in {targets.DOCS}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_docs_table:
        return write_docs_table()
    tiny = args.size == "tiny"
    variants = parse_variants(args.variant)
    bench = Bench(
        size=parse_size(args.size),
        reps=args.reps or (1 if tiny else 3),
        tiny=tiny,
        with_legacy=not (tiny or args.skip_legacy or args.only),
        with_3x=not (tiny or args.skip_3x or args.only),
        variants=variants,
        pool=args.pool,
        keep_logs=args.out if args.keep_logs else None,
        only=args.only,
        baselines=baseline_checkouts(args.baseline),
    )

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    log(f"session {bench.session}: {args.size}, {bench.reps} rep(s)")
    rounds.execute_all(bench)
    results = report.report(bench)
    md_path, json_path = report.write_results(results, args.out)
    print(md_path.read_text())
    log(f"wrote {md_path} and {json_path}")
    return 0
