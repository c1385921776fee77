"""What a person sees in a terminal: ``manage.py pgclone`` on a real pseudo-terminal.

The command runs in a process of its own whose stdin, stdout and stderr are a
pty, as in an interactive shell; the test reads what the terminal would show.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from pgclone import api
from pgclone.engine import jobs
from pgclone.models import Job, JobStep
from tests.helpers import ROOT, authors, make_dump, pgclone_databases, wait_for
from tests.processes import worker_env

pytestmark = pytest.mark.django_db(transaction=True)

CLEAR_LINE = "\r\x1b[K"


class Terminal:
    """``manage.py pgclone ARGS`` with a pty for its terminal."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        main, other = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "pgclone", *args],
            cwd=ROOT,
            env=env,
            stdin=other,
            stdout=other,
            stderr=other,
            close_fds=True,
        )
        os.close(other)
        self.fd = main
        self.chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except OSError:  # the other end closed: the process exited
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def screen(self) -> str:
        """What was written so far, with the terminal's CRLF line ends made LF."""
        return b"".join(self.chunks).decode(errors="replace").replace("\r\n", "\n")

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        os.close(self.fd)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.wait()


@pytest.fixture
def terminal(test_database_name, local_location) -> Iterator:
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        env = worker_env(test_database_name, PGCLONE_TEST_STORAGE=local_location)
        opened.append(Terminal(*args, env=env))
        return opened[-1]

    yield start
    for each in opened:
        each.stop()


def test_progress_is_one_line_rewritten_in_place(terminal):
    """``tail`` of a running job shows its progress on one line that each update
    rewrites; the step lines around it stay whole lines."""
    job = jobs.create_job(
        Job.Kind.DUMP, ("pre_dump", "dump", "upload"),
        database_alias="default", database_name="shop", config_name="default", options={},
    )  # fmt: skip
    assert jobs.claim_step(job, job.steps.get(name="pre_dump"), "somewhere")
    tail = terminal("tail", str(job.pk))
    wait_for(lambda: "pre_dump: started" in tail.screen, what="the step's first line")
    total = 8 * 1024**2
    jobs.start_progress(job.pk, total)
    for done in (1, 2, 3, 4):
        jobs.record_progress(job.pk, done * 1024**2, total)
        mib = f"{done}.0 MiB"
        wait_for(lambda mib=mib: mib in tail.screen, what=f"progress at {mib}")
    jobs.succeed_step(job.pk, "pre_dump")
    jobs.end_job(job.pk, Job.Status.FAILED, "stopped by the test")
    assert tail.wait() == 1

    screen = tail.screen
    progress = screen[screen.index("pre_dump: started\n") + len("pre_dump: started\n") :]
    progress = progress[: re.search(r"\[\d\d:\d\d:\d\d\]", progress).start()]  # to the next line
    # Every rendering starts by clearing the line; none of them ends one.
    renderings = [part for part in progress.split(CLEAR_LINE) if part]
    assert len(renderings) >= 4, repr(progress)
    assert all("\n" not in part for part in renderings), repr(progress)
    assert all(part.startswith("  pre_dump: ") for part in renderings), repr(progress)
    assert "4.0 MiB (~50%)" in renderings[-1]  # 4 MiB of 8
    # The rate is measured over seconds, never shown from a single burst.
    rates = re.findall(r"([\d.]+) (?:B|KiB|MiB)/s", progress)
    assert all(float(rate) >= 0 for rate in rates)
    # The next line replaced the progress line instead of following it.
    assert re.search(re.escape(CLEAR_LINE) + r"\[\d\d:", screen)


def test_restore_asks_for_the_database_name_on_a_terminal(terminal, local_location, target):
    key = make_dump("asked", local_location)

    declined = terminal("restore", key, "--database", "target", "--inline")
    wait_for(lambda: f"{target}: " in declined.screen, what="the prompt")
    assert "users and sessions come from there" in declined.screen
    declined.type("production\n")
    assert declined.wait() == 1
    assert f"Not restored: 'production' is not '{target}'" in declined.screen
    assert authors(target) == ["target-only"]
    assert not Job.objects.filter(kind=Job.Kind.RESTORE).exists()  # nothing was asked for

    confirmed = terminal("restore", key, "--database", "target", "--inline")
    wait_for(lambda: f"{target}: " in confirmed.screen, what="the prompt")
    confirmed.type(f"{target}\n")
    assert confirmed.wait() == 0, confirmed.screen
    assert "Restore succeeded" in confirmed.screen and authors(target) == ["asked"]

    unasked = terminal("restore", key, "--database", "target", "--inline", "--noinput")
    assert unasked.wait() == 0, unasked.screen
    assert "Type the database's name" not in unasked.screen
    assert pgclone_databases() == []


def test_subcommands_describe_themselves(terminal):
    shown = terminal("restore", "--help")
    assert shown.wait() == 0
    assert "Restore a dump (or copy a database on this server) into a database." in shown.screen
    assert "(default: default)" in shown.screen and "--noinput, --no-input" in shown.screen


def test_tail_of_a_finished_job_stamps_each_line_with_its_own_time(pgclone_cli, local_location):
    job = jobs.create_job(
        Job.Kind.DUMP, ("pre_dump",),
        database_alias="default", database_name="shop", config_name="default", options={},
    )  # fmt: skip
    began = timezone.now() - timedelta(minutes=5)
    ended = began + timedelta(seconds=100)
    JobStep.objects.filter(job=job).update(
        status=JobStep.Status.SUCCEEDED, started_at=began, finished_at=ended
    )
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.SUCCEEDED, started_at=began, finished_at=ended
    )

    shown = pgclone_cli("tail", str(job.pk), location=local_location).stdout

    clock = lambda moment: timezone.localtime(moment).strftime("%H:%M:%S")  # noqa: E731
    assert f"[{clock(began)}] pre_dump: started" in shown
    assert f"[{clock(ended)}] pre_dump: done in 1m40s" in shown


def test_cancel_says_what_is_true(pgclone_cli, local_location):
    pending = jobs.create_job(
        Job.Kind.DUMP, ("pre_dump",),
        database_alias="default", database_name="shop", config_name="default", options={},
    )  # fmt: skip
    said = pgclone_cli("cancel", str(pending.pk), location=local_location).stdout
    assert "before any worker started it: nothing to undo" in said
    assert "within a few seconds" not in said


def test_a_failing_hook_is_named_once(local_location):
    job = api.dump(pre_dump_hooks=["check --deploy --fail-level WARNING"], inline=True)

    assert job.status == Job.Status.FAILED
    assert "Hook 'check --deploy --fail-level WARNING' failed: SystemCheckError:" in job.error
    assert job.error.count("SystemCheckError") == 1


def test_a_dump_that_did_not_complete_names_no_key(pgclone_cli, local_location):
    job = jobs.create_job(
        Job.Kind.DUMP, ("pre_dump", "dump", "upload"),
        database_alias="default", database_name="shop", config_name="default", options={},
        dump_key="shop/20261125T000000.000000Z.default.dump",
    )  # fmt: skip
    jobs.cancel(job, "the test")

    shown = pgclone_cli("show", str(job.pk), location=local_location).stdout

    assert "(not written: the dump did not complete)" in shown


def test_ls_long_and_local_long(pgclone_cli, local_location, target, test_database_name):
    first = make_dump("one", local_location)
    second = make_dump("two", local_location)

    plain = pgclone_cli("ls", location=local_location).stdout.split()
    assert plain == [first, second]  # one key a line, for scripts
    long = pgclone_cli("ls", "--long", location=local_location).stdout.splitlines()
    assert long[0].split() == ["KEY", "SIZE", "AGE", "CONFIG", "FLAGS", "TRIAL"]
    for line, key in zip(long[1:], (first, second), strict=True):
        fields = line.split()
        assert fields[0] == key and fields[2] == "KiB" and fields[4] == "default"
        assert re.fullmatch(r"\d+[smhd]", fields[3]) and fields[6] == "-"

    api.restore(first, database="target", reversible=True, pre_swap_hooks=[], inline=True)
    local = pgclone_cli(
        "ls", "-l", "--local", "--database", "target", location=local_location
    ).stdout
    previous = next(line for line in local.splitlines() if line.startswith(":previous"))
    assert "MiB" in previous and "this database's copy" in previous
    own = [line for line in local.splitlines() if line.startswith(f":{test_database_name}")]
    assert own and "this database's copy" not in own[0]
