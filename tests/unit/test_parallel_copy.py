"""How a big scrubbed table is split between sessions."""

from __future__ import annotations

import pytest

from pgclone import parallel_copy


@pytest.mark.parametrize(
    ("blocks", "jobs", "ranges"),
    [
        (100, 2, [(0, 50), (50, None)]),
        (10, 3, [(0, 3), (3, 6), (6, None)]),
        (2, 4, [(0, 1), (1, None)]),
        (1, 4, [(0, None)]),
        (0, 4, []),
    ],
)
def test_blocks_are_split_in_ranges_the_last_open_ended(blocks, jobs, ranges):
    assert parallel_copy.block_ranges(blocks, jobs) == ranges


def test_a_stopped_set_of_sessions_starts_none():
    sessions = parallel_copy.Sessions()
    sessions.cancel()

    with pytest.raises(parallel_copy.Stopped), sessions.running(object()):
        pass


def test_a_dump_fails_with_what_stopped_it_not_with_what_stopping_it_caused():
    from pgclone import planned_dump
    from pgclone.exceptions import CommandFailed

    cancelled = CommandFailed(["psql"], 3, "ERROR:  canceling statement due to user request")
    real = CommandFailed(["psql"], 3, "ERROR:  division by zero")
    assert planned_dump.first_cause([parallel_copy.Stopped(), cancelled, real]) is real
    assert planned_dump.first_cause([parallel_copy.Stopped(), cancelled]) is None
    assert planned_dump.first_cause([real, cancelled]) is real
