"""The bench stops every process it started: a process group's members, not only its leader."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from bench import harness

# A leader that ends at once on SIGTERM, and a child of its (same group) that
# takes its time, or refuses: a Celery worker and its pool process, say.
LEADER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
time.sleep(60)
"""
CHILD = """
import os, signal, sys, time
def slowly(signum, frame):
    time.sleep(float(sys.argv[2]))
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[2] == "never" else slowly)
with open(sys.argv[1], "w") as ready:
    ready.write(str(os.getpid()))
time.sleep(60)
"""


def _start(
    stack: contextlib.ExitStack, tmp_path: Path, exits_after: str
) -> tuple[subprocess.Popen, int]:
    """Start the pair under ``stack``; the leader, and the child's pid once it
    handles SIGTERM."""
    ready = tmp_path / "child.pid"
    argv = [sys.executable, "-c", LEADER, CHILD, str(ready), exits_after]
    leader = harness.start_process(stack, argv, tmp_path / "pair.log")
    child = harness.wait_for(lambda: ready.exists() and ready.read_text(), 20, "the child")
    return leader, int(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_a_child_that_outlives_its_leader_is_waited_for(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        leader, child = _start(stack, tmp_path, exits_after="1.5")
    assert leader.returncode is not None
    assert not _alive(child), "the bench went on while a process it started was running"


def test_a_child_that_ignores_sigterm_is_killed_at_the_deadline(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        leader, child = _start(stack, tmp_path, exits_after="never")
        started = time.monotonic()
        harness.stop_process(leader, timeout=1)
        assert not _alive(child)
        assert time.monotonic() - started < 10
