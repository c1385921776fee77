"""Who runs a step: an identity unique to one worker process, and whether it is gone.

A claim names the machine (host name and boot id) and the process (pid and
its start time, so a pid reused after a restart is told apart). A process
on the same machine can then tell for sure that a claim's process is gone
(the worker was killed or restarted) and take over at once, without waiting
for the heartbeat to go stale. A claim made on another machine is never
judged here: only its heartbeat tells.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

SEPARATOR = "|"


@functools.cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if it is gone
    (or has exited and waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    state, *fields = stat.rsplit(")", 1)[1].split()
    if state in ("Z", "X"):
        # Exited, not yet reaped: an orphan waits for init, which may take seconds
        # to come to it (a container's first process, say).
        return None
    return fields[18]


def this_process() -> str:
    """The claim this process makes when it takes a step."""
    pid = os.getpid()
    return SEPARATOR.join([socket.gethostname(), boot_id(), str(pid), _start_time(pid) or ""])


def is_gone(claim: str) -> bool:
    """True only when ``claim`` was made on this machine by a process that no
    longer runs (or before the machine last booted); False when unsure."""
    parts = claim.split(SEPARATOR)
    if len(parts) != 4 or not boot_id():
        return False
    host, boot, pid, started = parts
    if host != socket.gethostname():
        return False  # another machine's: only its heartbeat tells
    if boot != boot_id():
        return True  # the machine restarted since
    if not pid.isdigit():
        return False
    return _start_time(int(pid)) != started
