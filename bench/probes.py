"""Threads that watch a measurement while it runs: the worker's memory, a client's gaps."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import psycopg2

from bench.postgres import PG


def _children() -> dict[int, list[int]]:
    """Every process's children, from ``/proc`` (one pass, no psutil needed)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _memory(pid: int) -> tuple[str, int, int]:
    """(command name, RSS bytes, PSS bytes) of a process; zeros if it is gone."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        rss = pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
        return name, rss, pss
    except OSError:
        return "", 0, 0


class MemorySampler:
    """Samples a process tree every 50 ms and keeps the peaks of one measurement.

    The PostgreSQL tools the worker runs count in ``tree_rss`` only: the
    targets are about the worker's own memory.
    """

    TOOLS = ("pg_dump", "pg_restore", "zstd", "psql")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        """Start a measurement: peaks are kept from now on (none before the first reset)."""
        with self._lock:
            self.peaks = {"worker_rss": 0, "worker_pss": 0, "task_rss": 0, "tree_rss": 0}

    def _sample(self) -> None:
        tree = _children()
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(tree.get(pid, []))
        worker_rss = worker_pss = task_rss = tree_rss = 0
        for pid in pids:
            name, rss, pss = _memory(pid)
            tree_rss += rss
            if name not in self.TOOLS:
                worker_rss += rss
                worker_pss += pss
                task_rss = max(task_rss, rss)
        with self._lock:
            if not self.peaks:
                return
            for key, value in (
                ("worker_rss", worker_rss),
                ("worker_pss", worker_pss),
                ("task_rss", task_rss),
                ("tree_rss", tree_rss),
            ):
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
