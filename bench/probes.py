"""Threads that watch a measurement while it runs: the worker's memory, a client's gaps."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import psycopg2

from bench.postgres import PG

# Every PSS_EVERY-th sample also reads PSS. RSS comes from the kernel's counters
# (/proc/PID/status), PSS only from a walk of the process's page tables
# (smaps_rollup), about 1 ms a process: at every 50 ms tick that cost 16% of
# a core on this 2-core machine, beside whatever was measured.
PSS_EVERY = 10


def _tree(pid: int) -> list[tuple[int, int]]:
    """``pid`` and its descendants with their depth (0 for ``pid``), from each
    thread's ``children`` file."""
    found, todo = [], [(pid, 0)]
    while todo:
        current, depth = todo.pop()
        found.append((current, depth))
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    children = (task / "children").read_text().split()
                    todo.extend((int(child), depth + 1) for child in children)
    return found


def _rss(pid: int) -> tuple[str, int]:
    """(command name, RSS bytes) of a process; ("", 0) if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "", 0
    name, rss = "", 0
    for line in status.splitlines():
        if line.startswith("Name:"):
            name = line.partition(":")[2].strip()
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return name, rss


def _pss(pid: int) -> int:
    """PSS bytes of a process; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemorySampler:
    """Samples a process tree every 50 ms (PSS every PSS_EVERY-th time) and
    keeps the peaks of one measurement.

    The worker's own processes are its main process and that process's
    children (a prefork pool); what those start (the PostgreSQL tools, and a child
    caught between its fork and its exec, which shares its parent's pages
    and would count them twice) count in ``tree_rss`` only: the targets are
    about the worker's own memory.
    """

    TOOLS = ("pg_dump", "pg_restore", "zstd", "psql")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[str, int] = {}
        self._ticks = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        """Start a measurement: peaks are kept from now on (none before the first reset)."""
        with self._lock:
            self.peaks = {"worker_rss": 0, "worker_pss": 0, "task_rss": 0, "tree_rss": 0}

    def _sample(self) -> None:
        self._ticks += 1
        with_pss = self._ticks % PSS_EVERY == 0
        worker_rss = worker_pss = task_rss = tree_rss = 0
        for pid, depth in _tree(self.pid):
            name, rss = _rss(pid)
            tree_rss += rss
            if depth <= 1 and name not in self.TOOLS:
                worker_rss += rss
                task_rss = max(task_rss, rss)
                if with_pss:
                    worker_pss += _pss(pid)
        found = {"worker_rss": worker_rss, "task_rss": task_rss, "tree_rss": tree_rss}
        if with_pss:
            found["worker_pss"] = worker_pss
        with self._lock:
            if not self.peaks:
                return
            for key, value in found.items():
                self.peaks[key] = max(self.peaks[key], value)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(Exception):
                self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class SwapProbe:
    """A client that connects, runs ``SELECT 1`` and disconnects every 5 ms.

    The longest time between two successful queries is what a user of the
    database being replaced would notice of the swap.
    """

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.longest = 0.0
        self.failures = 0
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_ok = time.perf_counter()
        while not self._stop.is_set():
            try:
                conn = psycopg2.connect(dbname=self.dbname, connect_timeout=2, **PG)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.fetchone()
                finally:
                    conn.close()
                now = time.perf_counter()
                self.longest = max(self.longest, now - last_ok)
                last_ok = now
                self.queries += 1
            except psycopg2.Error:
                self.failures += 1
            time.sleep(0.005)

    def stop(self) -> float:
        """Stop probing; the longest gap seen, in milliseconds."""
        self._stop.set()
        self._thread.join(timeout=10)
        return self.longest * 1000
