"""What pgclone costs a project's processes that run no job: its ``manage.py``
commands, its web processes. They load pgclone's models, settings and system
checks, never the dump and restore steps (about 0.1 s and 2 MiB each time)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT
from tests.processes import worker_env

LOADS = """
import json, sys
import django
django.setup()
from django.core.management import call_command
call_command("check", verbosity=0)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(test_database_name: str, script: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=worker_env(test_database_name),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_the_projects_own_commands_do_not_load_the_job_steps(test_database_name):
    loaded = loaded_by(test_database_name, LOADS)

    assert "pgclone.checks" in loaded  # pgclone's checks did run
    heavy = {
        "pgclone.steps.workflows",
        "pgclone.steps.dump",
        "pgclone.steps.restore",
        "pgclone.archive.container_writer",
        "pgclone.archive.planned_restore",
    }
    assert not heavy & loaded, sorted(heavy & loaded)


def test_a_job_started_from_code_still_finds_its_steps(test_database_name):
    loaded = loaded_by(
        test_database_name,
        LOADS.replace('call_command("check", verbosity=0)', "from pgclone import api, tasks"),
    )

    assert {"pgclone.steps.workflows", "pgclone.steps.dump", "pgclone.steps.restore"} <= loaded
