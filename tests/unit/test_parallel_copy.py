"""How a big scrubbed table is split between sessions."""

from __future__ import annotations

import pytest

from pgclone.archive import parallel_copy


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
    from pgclone.archive import container_writer
    from pgclone.exceptions import CommandFailed

    cancelled = CommandFailed(["psql"], 3, "ERROR:  canceling statement due to user request")
    real = CommandFailed(["psql"], 3, "ERROR:  division by zero")
    assert container_writer.first_cause([parallel_copy.Stopped(), cancelled, real]) is real
    assert container_writer.first_cause([parallel_copy.Stopped(), cancelled]) is None
    assert container_writer.first_cause([real, cancelled]) is real
    # psql interrupted in a COPY FROM STDIN, or between statements (it says nothing)
    in_copy = CommandFailed(["psql"], 3, "ERROR:  COPY from stdin failed: canceled by user")
    between = CommandFailed(["psql"], 3, "")
    assert container_writer.first_cause([in_copy, between, real]) is real


def test_a_failed_program_s_error_keeps_its_first_lines_and_its_last():
    """pg_dump 16+ prints its error, then a whole batched LOCK TABLE of thousands
    of names: the error is in the first lines, the exit reason in the last."""
    import os
    import sys

    from pgclone.exceptions import CommandFailed
    from pgclone.pg import programs

    script = (
        "import sys; sys.stderr.write('ERROR: canceling statement due to statement timeout\\n'"
        " + 'Query was: LOCK TABLE ' + ', '.join(f't{i}' for i in range(5000)) + '\\nthe end\\n');"
        " sys.exit(1)"
    )
    with (
        pytest.raises(CommandFailed) as failed,
        programs.spawn([sys.executable, "-c", script], env=dict(os.environ)) as proc,
    ):
        proc.stdout.read()
    message = str(failed.value)
    assert "due to statement timeout" in message and "the end" in message
    assert "[...]" in message and len(message) < 7000
    assert "gave way" in message  # a LOCK TABLE that timed out


def test_a_session_among_a_step_s_children_is_cancelled_when_they_are_killed():
    from pgclone.pg import programs

    class Connection:
        cancelled = 0

        def cancel(self) -> None:
            self.cancelled += 1

    connection = Connection()
    children = programs.current_children()
    with programs.session_among_children(connection):
        for child in list(children):  # what a cancelled job's heartbeat does
            child.kill()
    assert connection.cancelled == 1
    for child in list(children):  # once the block is left, no longer
        child.kill()
    assert connection.cancelled == 1
