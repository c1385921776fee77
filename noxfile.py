"""The supported matrix (README, "Supported versions") as nox sessions.

    .venv/bin/nox -l                                    # the sessions
    .venv/bin/nox -s full                               # 3.11, Django 5.2, psycopg2: all tests
    .venv/bin/nox -s subset                             # the other combinations: a subset
    .venv/bin/nox -s "subset(3.13-django6.1-psycopg)"   # one; arguments after -- go to pytest

`full` is what `bash tests/run.sh` runs in .venv; .ci/run runs that, then
`nox -s subset`. Each session has its own virtualenv under .nox/ (kept between
runs; the installs are skipped while pyproject.toml's [project] table and the
session's pins are unchanged) with `.[test,DRIVER]` and the session's Django installed, and tells
the test settings its driver through PGCLONE_TEST_DRIVER. The tests need the
real PostgreSQL and Redis on loopback, as for tests/run.sh.

The interpreters come from pyenv ($PYENV_ROOT/versions/X.Y.Z, the newest patch
release of each X.Y) or PATH; a missing one fails its sessions, never skips
them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

nox.options.sessions = ["full", "subset"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "virtualenv"
# A missing interpreter fails its sessions, and nox never downloads one.
nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"

MAIN = ("3.11", "5.2", "psycopg2")
# (python, Django line, driver): the other valid pairs that are tested. Django
# 6.x needs Python 3.12+; Django 4.2 stops at Python 3.12.
SUBSET = [
    ("3.11", "4.2", "psycopg2"),
    ("3.12", "5.2", "psycopg"),
    ("3.12", "6.1", "psycopg2"),
    ("3.13", "6.0", "psycopg2"),
    ("3.13", "6.1", "psycopg"),
]
PYTHONS = sorted({combo[0] for combo in [MAIN, *SUBSET]})

# django-celery-beat (test settings' INSTALLED_APPS, one beat test) declares
# Django<6.1 up to its latest release, 2.9.0; for newer lines the session
# installs the project first and then upgrades Django over that cap.
NEWER_THAN_DJANGO_CELERY_BEAT = {"6.1"}


def _pyenv_root() -> Path:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    if pyenv := shutil.which("pyenv"):
        found = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip():
            return Path(found.stdout.strip())
    return Path.home() / ".pyenv"


def _put_interpreters_on_path() -> None:
    """Put each needed pyenv interpreter's own bin/ first on PATH.

    pyenv's shims can't be used: `python3.12` through a shim fails unless 3.12
    is the selected version. Say which interpreters can't be found at all.
    """
    versions = _pyenv_root() / "versions"
    path = os.environ.get("PATH", "")
    outside_shims = os.pathsep.join(
        entry for entry in path.split(os.pathsep) if "shims" not in Path(entry).parts
    )
    dirs = []
    for minor in PYTHONS:
        patches = [
            candidate
            for candidate in versions.glob(f"{minor}.*")
            if re.fullmatch(rf"{re.escape(minor)}\.\d+", candidate.name)
            and (candidate / "bin" / f"python{minor}").exists()
        ]
        if patches:
            newest = max(patches, key=lambda patch: int(patch.name.rsplit(".", 1)[1]))
            dirs.append(str(newest / "bin"))
        elif not shutil.which(f"python{minor}", path=outside_shims):
            print(
                f"noxfile: no Python {minor} in {versions} nor on PATH (outside pyenv's shims): "
                f"its sessions will fail (`pyenv install {minor}` brings it).",
                file=sys.stderr,
            )
    os.environ["PATH"] = os.pathsep.join([*dirs, path])


_put_interpreters_on_path()


def _install(session: nox.Session, django: str, driver: str) -> None:
    """Install the project (editable) with its test tools, the driver and the Django line.

    Skipped when the session's virtualenv already has exactly that: the same
    [project] table (comments and tool settings don't count) and the same pins.
    """
    project = ["-e", f".[test,{driver}]"]
    pin = f"Django~={django}.0"
    steps = [[*project], [pin]] if django in NEWER_THAN_DJANGO_CELERY_BEAT else [[*project, pin]]
    project_table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = hashlib.sha256(json.dumps([project_table, steps], sort_keys=True).encode()).hexdigest()
    stamp = Path(session.virtualenv.location) / ".pgclone-installed"
    if stamp.exists() and stamp.read_text() == wanted:
        session.log("Dependencies unchanged: skipping the installs")
        return
    for step in steps:
        session.install("--quiet", *step)
    stamp.write_text(wanted)


VERSIONS = """
import importlib.metadata as m, platform
names = ["Django", "psycopg", "psycopg-binary", "psycopg2", "psycopg2-binary",
         "django-pgconnection"]
found = []
for name in names:
    try:
        found.append(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        pass
print("Python", platform.python_version(), "|", ", ".join(found))
"""


def _pytest(session: nox.Session, driver: str, *args: str) -> None:
    """Run pytest: on setup.cfg's testpaths (tests/), or on what follows `--`."""
    session.log(session.run("python", "-c", VERSIONS, silent=True, log=False).strip())
    # success_codes=[0]: pytest's exit status 5 (no test collected) fails the session.
    session.run(
        "python", "-m", "pytest", *args, *session.posargs,
        env={"PGCLONE_TEST_DRIVER": driver},
        success_codes=[0],
    )  # fmt: skip


@nox.session(python=MAIN[0])
def full(session: nox.Session) -> None:
    """The main combination, Python 3.11 + Django 5.2 + psycopg2: the whole suite."""
    _, django, driver = MAIN
    _install(session, django, driver)
    _pytest(session, driver)


@nox.session
@nox.parametrize(
    ("python", "django", "driver"),
    SUBSET,
    ids=[f"{python}-django{django}-{driver}" for python, django, driver in SUBSET],
)
def subset(session: nox.Session, django: str, driver: str) -> None:
    """Another supported combination: the unit tests and the `matrix` integration tests."""
    _install(session, django, driver)
    _pytest(session, driver, "-m", "matrix or not integration")
