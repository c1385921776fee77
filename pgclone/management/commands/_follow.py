"""Following a job live: its steps as they start and end, and its progress.

Everything is read back from the job rows, so a job can be followed from any
machine that reaches the database, whichever worker runs it. The rows are read
again when the job's worker says they changed (``pgclone.engine.wakeups``),
and at least every second; where the job tables are not in PostgreSQL, by
polling. On a terminal progress is one line rewritten in place; piped, it is
a plain line now and then.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from django.core.management.base import OutputWrapper
from django.db import Error as DatabaseError
from django.db import close_old_connections, connection
from django.utils import timezone

from pgclone import conf
from pgclone.engine import wakeups
from pgclone.exceptions import JobNotFound
from pgclone.humanize import human_bytes, human_seconds
from pgclone.models import Job, JobStep

PIPED_PROGRESS_SECONDS = 5.0
NO_WORKER_HINT_SECONDS = 10.0
RECONNECT_SECONDS = 120.0
# Woken by the job's changes, a follower reads at least this often: the
# worker's heartbeat (a lost worker), the hint when no worker starts the job.
LISTENING_READ_SECONDS = 1.0
# Without notifications, poll often at first, so that a short job's command
# returns soon after it ends (a copy from a kept copy takes about a second:
# each poll is two indexed reads), then settle to gentler rates for long ones.
FIRST_POLL_SECONDS = 0.02
FIRST_POLL_FOR_SECONDS = 3.0
QUICK_POLL_SECONDS = 0.1
QUICK_POLL_FOR_SECONDS = 15.0
# The rate shown is measured over the last few seconds, not between two polls:
# progress is saved in bursts (a chunk at a time), which made it jump about.
RATE_WINDOW_SECONDS = 5.0


class Follower:
    def __init__(
        self,
        job_id: Any,
        out: TextIO,
        *,
        tty: bool,
        poll: float = 0.25,
        on_silent: Callable[[], object] | None = None,
    ) -> None:
        """``poll``: seconds between reads once the job has run for a while.
        ``on_silent``: called (at most every 5 s) while the job's worker is
        silent for longer than PGCLONE_STALE_JOB_SECONDS; the command passes
        the sweep, which fails the job when its worker is lost, so that
        following it ends. The viewer itself only reads."""
        self.job_id = job_id
        self.on_silent = on_silent
        self.out = out
        self.tty = tty
        self.poll = poll
        self._shown: dict[str, str] = {}
        self._progress_line = False
        self._last_piped = 0.0
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._label = ""
        self._last_sweep = 0.0

    def _emit(self, text: str) -> None:
        """Write exactly ``text``: Django's OutputWrapper would end it with a newline,
        which turns a progress line rewritten in place into a new line each time."""
        if isinstance(self.out, OutputWrapper):
            self.out.write(text, ending="")
        else:
            self.out.write(text)
        self.out.flush()

    def _write(self, text: str) -> None:
        """A line of its own, in place of the progress line if one is showing."""
        self._emit(("\r\033[K" if self._progress_line else "") + text + "\n")
        self._progress_line = False

    def _show_steps(self, steps: list[JobStep]) -> None:
        for step in steps:
            before = self._shown.get(step.name, JobStep.Status.PENDING)
            if step.status == before:
                continue
            self._shown[step.name] = step.status
            began = _clock(step.started_at)
            ended = _clock(step.finished_at or step.started_at)
            if step.status == JobStep.Status.RUNNING:
                self._last_piped = time.monotonic()  # a piped progress line only after a while
                self._samples.clear()
            if step.status == JobStep.Status.RUNNING or (
                before == JobStep.Status.PENDING
                and (step.status in (JobStep.Status.SUCCEEDED, JobStep.Status.FAILED))
            ):
                self._write(f"[{began}] {step.name}: started")
            if step.status == JobStep.Status.SUCCEEDED:
                detail = f" - {step.message}" if step.message else ""
                self._write(
                    f"[{ended}] {step.name}: done in {human_seconds(step.duration)}{detail}"
                )
            elif step.status == JobStep.Status.FAILED:
                self._write(f"[{ended}] {step.name}: FAILED after {human_seconds(step.duration)}")

    def _show_progress(self, job: Job) -> None:
        running = self._shown.get(job.current_step) == JobStep.Status.RUNNING
        if job.status != Job.Status.RUNNING or job.progress_done is None or not running:
            return
        now = time.monotonic()
        done = job.progress_done
        if job.progress_label != self._label:  # another phase: its own rate
            self._label = job.progress_label
            self._samples.clear()
        doing = f"{job.progress_label} " if job.progress_label else ""
        line = f"  {job.current_step}: {doing}{human_bytes(done)}"
        if job.progress_total:
            percent = min(99, int(100 * done / job.progress_total))
            line += f" (~{percent}%)"
        rate = self._rate(now, done)
        if rate is not None:
            line += f", {human_bytes(rate)}/s"
        if self.tty:
            self._emit("\r\033[K" + line)
            self._progress_line = True
        elif now - self._last_piped >= PIPED_PROGRESS_SECONDS:
            self._last_piped = now
            self._write(line)

    def _rate(self, now: float, done: int) -> float | None:
        """Bytes a second over the last RATE_WINDOW_SECONDS (None until a second of it)."""
        if not self._samples or self._samples[-1][1] != done:
            self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_done = self._samples[0]
        if now - first_time < 1.0:
            return None
        return max(0.0, (done - first_done) / (now - first_time))

    def _sweep_if_silent(self, job: Job) -> None:
        """Tell ``on_silent`` of a running job whose worker went silent."""
        if self.on_silent is None:
            return
        if job.status != Job.Status.RUNNING or job.heartbeat_at is None:
            return
        silent = (timezone.now() - job.heartbeat_at).total_seconds()
        if silent > conf.stale_job_seconds() and time.monotonic() - self._last_sweep > 5:
            self._last_sweep = time.monotonic()
            self.on_silent()

    def _pause(self, started: float, listener: wakeups.Listener | None) -> None:
        if listener is not None:
            listener.wait(LISTENING_READ_SECONDS)
            return
        waited = time.monotonic() - started
        if waited < FIRST_POLL_FOR_SECONDS:
            time.sleep(min(self.poll, FIRST_POLL_SECONDS))
        elif waited < QUICK_POLL_FOR_SECONDS:
            time.sleep(min(self.poll, QUICK_POLL_SECONDS))
        else:
            time.sleep(self.poll)

    def _read(self) -> tuple[Job, list[JobStep]]:
        job = Job.objects.get(pk=self.job_id)
        return job, list(job.steps.all())

    def run(self, stop: threading.Event | None = None) -> Job:
        """Show the job until it ends (or ``stop`` is set); return its last state."""
        with wakeups.listening(self.job_id) as listener:
            return self._run(stop, listener)

    def _run(self, stop: threading.Event | None, listener: wakeups.Listener | None) -> Job:
        started = time.monotonic()
        hinted = False
        lost_since: float | None = None
        while True:
            try:
                job, steps = self._read()
                lost_since = None
            except Job.DoesNotExist:
                raise JobNotFound(
                    f"Job {self.job_id} is no longer in the database (was it replaced by a "
                    "copy without pgclone's tables?)."
                ) from None
            except DatabaseError:
                # The connection was cut (a restore's swap ends sessions): reconnect.
                close_old_connections()
                connection.close()
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > RECONNECT_SECONDS:
                    raise
                self._pause(started, listener)
                continue
            self._show_steps(steps)
            if job.is_finished or (stop is not None and stop.is_set()):
                if self._progress_line:
                    self._emit("\r\033[K")
                    self._progress_line = False
                return job
            self._show_progress(job)
            self._sweep_if_silent(job)
            waited = time.monotonic() - started
            if job.status == Job.Status.PENDING and waited > NO_WORKER_HINT_SECONDS and not hinted:
                hinted = True
                queue = conf.celery_queue() or "Celery's default queue"
                self._write(
                    f"Still waiting for a worker to start the job. Is a Celery worker running "
                    f"and consuming from {queue}? (Or run the job here with --inline.)"
                )
            self._pause(started, listener)


def _clock(moment: Any) -> str:
    return timezone.localtime(moment or timezone.now()).strftime("%H:%M:%S")


def follow(
    job_id: Any,
    out: TextIO,
    *,
    tty: bool,
    stop: threading.Event | None = None,
    on_silent: Callable[[], object] | None = None,
) -> Job:
    return Follower(job_id, out, tty=tty, on_silent=on_silent).run(stop)
