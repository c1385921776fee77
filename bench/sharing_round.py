"""The sharing round: planned dumps (``scrub``, ``subset``) against the plain one.

The bench project's dump configs ``scrubbed`` and ``subset`` (``bench/settings.py``)
name the bench database's tables through the models of ``bench.shop``. The
three dumps alternate, then the plain and the subset's restores, all through
the same worker, so the ratios compare like with like.
"""

from __future__ import annotations

from collections.abc import Callable

from bench import contenders
from bench.session import Bench, Worker

DUMPS = (("sharing_plain", "default"), ("scrubbed", "scrubbed"), ("subset", "subset"))


def sharing_round(bench: Bench, main: Worker) -> None:
    """Plain, scrubbed and subset dumps and the ``pg_dump -Fc -Z0`` floor, alternately;
    then the plain and the subset's restores. Records their sizes and what the
    subset kept per table."""
    keys: dict[str, str] = {}
    results: dict[str, dict] = {}
    sizes = bench.extra.setdefault("sizes", {})

    def dump(label: str, config: str) -> Callable[[], None]:
        def go() -> None:
            job = contenders.pgclone_job(
                bench,
                f"{label}_dump",
                ["dump", "--database", "data", "--config", config],
                main,
                memory=f"{label}_dump_1x",
            )
            keys[label] = job["key"]
            results[label] = job["result"]
            proof = job["result"].get("leak_proof")
            if proof:  # what the dump waited for its leak proof, and the search's own time
                bench.record(f"{label}_proof_s", proof["seconds"])
                bench.record(f"{label}_search_s", proof["search_seconds"])
            sizes[f"{label}_dump"] = job["result"].get("size")

        return go

    def restore(label: str) -> Callable[[], None]:
        return lambda: contenders.pgclone_job(
            bench, f"{label}_restore", ["restore", keys[label], "--database", "target"], main,
            memory=f"{label}_restore_1x",
        )  # fmt: skip

    bench.alternate(
        [
            *((f"{label} dump", dump(label, config)) for label, config in DUMPS),
            ("pg_dump floor (sharing)", lambda: contenders.pg_dump_floor(bench, "sharing_floor")),
        ]
    )
    bench.extra["subset_rows"] = kept_rows(results["subset"], results["sharing_plain"])
    bench.alternate(
        [
            ("plain restore (sharing)", restore("sharing_plain")),
            ("subset restore", restore("subset")),
        ]
    )


def kept_rows(subset: dict, plain: dict) -> dict[str, dict[str, int | None]]:
    """Per table, the rows the subset dump wrote (its plan's ``rows``) and the
    table's rows in the database (as the plain dump's ``tables`` counted or
    estimated them: a subset dump's own hold the rows it wrote)."""
    written = (subset.get("plan") or {}).get("rows", {})
    totals = {table["name"]: table.get("rows") for table in plain.get("tables") or []}
    kept = {}
    for name, rows in sorted(written.items()):
        bare = name.rsplit(".", 1)[-1]
        kept[bare] = {"kept": rows, "of": totals.get(bare)}
    return kept
