"""django-pgclone 3.8, the contender pgclone replaces: installed, dumped with, restored with.

It runs in a virtualenv of its own (``bench/.venvs/``, kept between runs as a
cache) with the tiny project in ``bench/legacy/``, so that its ``pgclone``
package is the one imported, not this repository's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench.harness import log
from bench.postgres import pg_env
from bench.session import BENCH, Bench

VENVS = BENCH / ".venvs"
LEGACY_VERSION = "3.8.*"
PROJECT = BENCH / "legacy"


def install(bench: Bench) -> Path | None:
    """django-pgclone 3.8 in its own virtualenv; its Python, or None (with a note)
    when it cannot be installed here: the run goes on without it."""
    venv = VENVS / "django-pgclone-3.8"
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            log("installing django-pgclone 3.8 into bench/.venvs/")
            bench.run([sys.executable, "-m", "venv", str(venv)], name="legacy-install")
            bench.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    f"django-pgclone=={LEGACY_VERSION}",
                    "psycopg2-binary",
                ],
                name="legacy-install",
            )
        probe = [
            str(python),
            "-c",
            "import importlib.metadata as m; print(m.version('django-pgclone'))",
        ]
        version = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
        bench.extra["legacy_version"] = version.strip()
        return python
    except Exception as exc:
        shutil.rmtree(venv, ignore_errors=True)
        bench.notes.append(
            f"django-pgclone 3.8 could not be installed, so it is not measured: {exc}"
        )
        return None


def env(bench: Bench) -> dict[str, str]:
    """The legacy project's environment: none of this repository's Python path or
    settings, its virtualenv's tools first on ``PATH``."""
    result = pg_env()
    for name in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV"):
        result.pop(name, None)
    result.update(
        BENCH_DATA_DB=bench.db["data"],
        BENCH_LEGACY_TARGET_DB=bench.db["legacy"],
        BENCH_LEGACY_STORAGE=str(storage(bench)),
        PATH=f"{bench.legacy_python.parent}:{result.get('PATH', '')}"
        if bench.legacy_python
        else result["PATH"],
    )
    return result


def storage(bench: Bench) -> Path:
    return bench.work / "legacy-dumps"


def dump(bench: Bench) -> str:
    """``pgclone dump --database data`` into an emptied folder; the dump's key.

    Records ``legacy_dump_s`` and the dump's size (``extra["sizes"]["legacy"]``).
    """
    assert bench.legacy_python
    folder = storage(bench)
    shutil.rmtree(folder, ignore_errors=True)
    argv = [str(bench.legacy_python), "manage.py", "pgclone", "dump", "--database", "data"]
    bench.record(
        "legacy_dump_s",
        bench.run(argv, env=env(bench), cwd=PROJECT, name="legacy_dump"),
    )
    dumps = sorted(folder.rglob("*.dump"))
    bench.extra.setdefault("sizes", {})["legacy"] = dumps[-1].stat().st_size
    return str(dumps[-1].relative_to(folder))


def restore(bench: Bench) -> None:
    """``pgclone restore KEY`` of the last dump (no hooks); records ``legacy_restore_s``."""
    argv = [
        str(bench.legacy_python),
        "manage.py",
        "pgclone",
        "restore",
        bench.extra["legacy_key"],
    ]
    bench.record(
        "legacy_restore_s",
        bench.run(argv, env=env(bench), cwd=PROJECT, name="legacy_restore"),
    )
