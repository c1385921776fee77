"""The kept-copies round: restores of a dump that has a kept copy, and what they
are measured against.

Two dumps of the same data: the first never has a kept copy when a contender
starts (the plain restore, and the first restore that keeps one, whose copy
is dropped afterwards, untimed); the second has one, made once before the
round (untimed), which the restore from it, ``copy KEY NEWNAME`` and the raw
``CREATE DATABASE … TEMPLATE kept STRATEGY FILE_COPY`` read. ``restore :NAME``
of the data, and a command's start-up, alternate with them.

Every contender starts after a ``CHECKPOINT`` and a ``sync`` (untimed: the
bench's :func:`bench.session.settle`), so none pays for the dirty pages of
what ran before. The plain restore is followed by a timed
``CHECKPOINT`` and a timed FILE_COPY of the database it restored, at once:
what keeping a copy of it by hand would cost then (0.85-0.89 s at 1 GB,
against 0.6-0.7 s for the kept copy's; the keep inside the job took 3.3-4.0
s, for reasons docs/benchmarks.md has not found yet).
"""

from __future__ import annotations

from bench import contenders
from bench.postgres import drop_database
from bench.session import Bench, Worker


def kept_round(bench: Bench, main: Worker) -> None:
    """The restore from a kept copy against ``restore :NAME``, the FILE_COPY it
    runs and the restore without it; ``copy``; the first restore that keeps one."""
    fresh, kept_key = (_dump(bench, main, f"kept_dump_{number}") for number in (1, 2))
    setup = contenders.pgclone_job(
        bench, "kept_setup_restore", _restore(kept_key, "keep"), main, memory="kept_setup_1x"
    )
    kept = contenders.kept_copy_of(bench, setup)
    bench.extra["kept_copy"] = kept

    def copied_by_hand() -> None:
        contenders.checkpoint(bench, "kept_checkpoint")
        contenders.file_copy(bench, bench.db["target"], "kept_fresh_file_copy")

    def plain() -> None:
        job = contenders.pgclone_job(
            bench, "kept_plain_restore", _restore(fresh), main, memory="kept_plain_restore_1x",
            then=copied_by_hand,
        )  # fmt: skip
        contenders.restore_temp_step(bench, job, "kept_plain_restore")

    def first_keeping() -> None:
        job = contenders.pgclone_job(
            bench, "kept_first_restore", _restore(fresh, "keep"), main,
            memory="kept_first_restore_1x",
        )  # fmt: skip
        contenders.restore_temp_step(bench, job, "kept_first_restore")
        drop_database(contenders.kept_copy_of(bench, job))  # the next one is a first again

    def from_kept() -> None:
        job = contenders.pgclone_job(
            bench, "kept_from_restore", _restore(kept_key), main, memory="kept_from_restore_1x"
        )
        contenders.require_kept_copy_used(bench, job, kept, "kept_from_restore")

    def local() -> None:
        contenders.pgclone_job(
            bench, "kept_local_restore", _restore(f":{bench.db['data']}"), main,
            memory="kept_local_restore_1x",
        )  # fmt: skip

    def copy() -> None:
        job = contenders.pgclone_job(
            bench, "kept_copy", ["copy", kept_key, bench.copy_name, "--database", "target"],
            main, memory="kept_copy_1x",
        )  # fmt: skip
        contenders.require_kept_copy_used(bench, job, kept, "kept_copy")
        drop_database(bench.copy_name)

    def startup() -> None:
        seconds = bench.manage("jobs", "--limit", "1", worker=main, name="kept_startup")
        bench.record("kept_startup_s", seconds)

    bench.alternate(
        [
            ("restore, no kept copy", plain),
            ("restore keeping a copy", first_keeping),
            ("restore from its kept copy", from_kept),
            ("restore :NAME (kept round)", local),
            ("FILE_COPY of the kept copy", lambda: contenders.file_copy(bench, kept)),
            ("copy KEY NEWNAME", copy),
            ("command start-up (kept round)", startup),
        ]
    )


def _dump(bench: Bench, main: Worker, name: str) -> str:
    args = ["dump", "--database", "data"]
    return contenders.pgclone_job(bench, name, args, main, memory=f"{name}_1x")["key"]


def _restore(target: str, config: str = "default") -> list[str]:
    return ["restore", target, "--database", "target", "--config", config]
