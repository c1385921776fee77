"""docs/benchmarks.md's targets table is the one bench/targets.py holds."""

from __future__ import annotations

from bench import targets


def test_the_docs_table_matches_the_targets():
    text = targets.DOCS.read_text()
    block = text[text.index(targets.START) + len(targets.START) : text.index(targets.END)]
    assert block.strip() == targets.docs_table(), (
        "docs/benchmarks.md is out of date: run `python -m bench --write-docs-table`"
    )


def test_every_target_has_a_limit_and_says_what_it_measures():
    assert targets.TARGETS
    for target in targets.TARGETS:
        assert target.limit > 0 and target.measures and target.value.describe()
