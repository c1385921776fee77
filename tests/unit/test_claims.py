"""Claims: a worker process tells for sure that another process of this machine is gone."""

from __future__ import annotations

import socket
import subprocess
import sys

from pgclone.engine import claims


def claim_of(pid: int, started: str, host: str | None = None, boot: str | None = None) -> str:
    return claims.SEPARATOR.join(
        [host or socket.gethostname(), boot or claims.boot_id(), str(pid), started]
    )


def test_this_process_is_not_gone():
    assert not claims.is_gone(claims.this_process())


def test_a_process_that_exited_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = claims._start_time(child.pid)
    assert started and not claims.is_gone(claim_of(child.pid, started))
    child.kill()
    child.wait()
    assert claims.is_gone(claim_of(child.pid, started))


def test_a_reused_pid_is_told_apart_by_its_start_time():
    mine = claims.this_process().split(claims.SEPARATOR)
    assert claims.is_gone(claim_of(int(mine[2]), str(int(mine[3]) - 1)))


def test_a_claim_from_before_the_last_boot_is_gone():
    mine = claims.this_process().split(claims.SEPARATOR)
    assert claims.is_gone(claim_of(int(mine[2]), mine[3], boot="another-boot"))


def test_another_machines_claim_is_never_judged_here():
    assert not claims.is_gone(claim_of(1, "0", host="some-other-host"))
    assert not claims.is_gone("garbage")
    assert not claims.is_gone("")
