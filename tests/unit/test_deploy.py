"""The files in deploy/, checked without running them (no container engine,
systemd or services here): they parse, name modules and tasks that exist,
and configure Celery the way pgclone's system checks want."""

from __future__ import annotations

import ast
import configparser
import contextlib
import importlib
import re
import shlex
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery, Task
from celery import _state as celery_state

from pgclone import checks, tasks
from pgclone.steps import options
from pgclone.storage import storage_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
CELERY_WARNINGS = {"pgclone.W010", "pgclone.W011", "pgclone.W012"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text(), source=str(path))
    return parser


def procfile() -> dict[str, str]:
    processes = {}
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = command.strip()
    return processes


def argv(command: str | list[str]) -> list[str]:
    return list(command) if isinstance(command, list) else shlex.split(command)


def commands() -> dict[str, list[str]]:
    """Every command line in deploy/, by where it comes from."""
    found = {f"systemd/{path.name}": argv(unit(path)["Service"]["ExecStart"]) for path in UNITS}
    found.update({f"Procfile {name}": argv(line) for name, line in procfile().items()})
    for name, service in compose()["services"].items():
        if "command" in service:
            found[f"docker-compose.yml {name}"] = argv(service["command"])
    return found


def celery_commands(subcommand: str | None = None) -> dict[str, list[str]]:
    return {
        where: words
        for where, words in commands().items()
        if Path(words[0]).name == "celery" and (subcommand is None or subcommand in words)
    }


def option(words: list[str], short: str | None, long: str) -> str | None:
    """The value of an option given as ``-A x``, ``-Ax``, ``--app x`` or ``--app=x``."""
    for i, word in enumerate(words):
        if word in (short, long):
            return words[i + 1]
        if word.startswith(long + "="):
            return word.split("=", 1)[1]
        if short and word.startswith(short) and len(word) > len(short) and word[1] != "-":
            return word[len(short) :]
    return None


@contextlib.contextmanager
def keeping_current_celery_app() -> Iterator[None]:
    """Creating a Celery app makes it the current one: put the previous one back."""
    previous = celery_state.get_current_app()
    try:
        yield
    finally:
        previous.set_current()


def settings_example() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "settings_example"}
    path = DEPLOY / "settings_example.py"
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - our own file
    return namespace


def celery_app_from(values: dict[str, Any]) -> Celery:
    app = Celery("settings_example", set_as_current=False)
    app.config_from_object(types.SimpleNamespace(**values), namespace="CELERY")
    return app


def celery_warnings(app: Celery) -> set[str]:
    with keeping_current_celery_app():
        app.set_current()
        return {message.id for message in checks.check_celery()} & CELERY_WARNINGS


def task_names() -> set[str]:
    return {value.name for value in vars(tasks).values() if isinstance(value, Task)}


# docker-compose.yml -------------------------------------------------------------


def test_compose_has_every_service() -> None:
    services = compose()["services"]
    assert {"web", "worker", "beat", "postgres", "redis", "minio", "createbucket"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis")
    assert services["minio"]["image"].startswith("minio/minio")


def test_compose_processes_wait_for_the_database_broker_schema_and_bucket() -> None:
    services = compose()["services"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert {"postgres", "redis", "migrate", "createbucket"} <= set(depends), name
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["createbucket"]["condition"] == "service_completed_successfully"
    assert argv(services["migrate"]["command"])[-3:] == ["manage.py", "migrate", "--noinput"]
    assert "create_bucket" in " ".join(argv(services["createbucket"]["command"]))


def test_compose_environment_feeds_the_settings_example() -> None:
    environment = compose()["services"]["worker"]["environment"]
    read = set(
        re.findall(r'os\.environ\.get\("(\w+)"', (DEPLOY / "settings_example.py").read_text())
    )
    wanted = {name for name in read if name.startswith(("DATABASE_", "CELERY_"))}
    wanted |= {"PGCLONE_STORAGE_LOCATION", "PGCLONE_S3_ENDPOINT_URL"}
    assert wanted <= set(environment)
    assert environment["PGCLONE_STORAGE_LOCATION"].startswith("s3://")
    assert environment["PGCLONE_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert environment["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert environment["DATABASE_HOST"] == "postgres"


def test_compose_runs_one_beat() -> None:
    beat = compose()["services"]["beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1


# systemd units and Procfile -----------------------------------------------------


def test_there_are_units_for_worker_and_beat() -> None:
    assert {path.name for path in UNITS} == {"pgclone-worker.service", "pgclone-beat.service"}


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.name)
def test_unit_files_parse(path: Path) -> None:
    parsed = unit(path)
    assert {"Unit", "Service", "Install"} <= set(parsed.sections())
    exec_start = parsed["Service"]["ExecStart"]
    assert exec_start.startswith("/"), "systemd wants an absolute path to the program"
    assert parsed["Install"]["WantedBy"]
    assert parsed["Service"]["WorkingDirectory"]
    assert parsed["Service"]["EnvironmentFile"]


def test_procfile_has_web_worker_and_beat() -> None:
    processes = procfile()
    assert {"web", "worker", "beat"} <= set(processes)
    assert "migrate" in processes.get("release", "")


# Celery command lines -----------------------------------------------------------


def test_worker_and_beat_are_started_everywhere() -> None:
    sources = ("systemd/", "Procfile", "docker-compose.yml")
    for subcommand in ("worker", "beat"):
        where = celery_commands(subcommand)
        for source in sources:
            assert any(w.startswith(source) for w in where), f"no celery {subcommand} in {source}"


@pytest.mark.parametrize("where", sorted(celery_commands()))
def test_celery_commands_name_an_app_module_in_deploy(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_name = option(celery_commands()[where], "-A", "--app")
    assert module_name, f"{where}: no -A/--app"
    assert (DEPLOY / f"{module_name.replace('.', '/')}.py").is_file()
    monkeypatch.syspath_prepend(str(DEPLOY))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings")
    sys.modules.pop(module_name, None)
    try:
        with keeping_current_celery_app():
            module = importlib.import_module(module_name)
            assert isinstance(module.app, Celery)
    finally:
        sys.modules.pop(module_name, None)


def test_workers_read_pgclones_queue() -> None:
    queue = settings_example()["PGCLONE_CELERY_QUEUE"]
    workers = celery_commands("worker")
    assert workers
    for where, words in workers.items():
        queues = option(words, "-Q", "--queues")
        assert queues and queue in queues.split(","), where
        concurrency = option(words, "-c", "--concurrency")
        assert concurrency and int(concurrency) >= 1, where


# settings_example.py ------------------------------------------------------------


def test_settings_example_satisfies_pgclones_celery_checks() -> None:
    values = settings_example()
    assert celery_warnings(celery_app_from(values)) == set()
    # The rules, as pgclone.checks states them.
    assert values["CELERY_WORKER_PREFETCH_MULTIPLIER"] == 1
    assert values["CELERY_TASK_TIME_LIMIT"] > 0
    visibility = values["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"]
    assert visibility > values["CELERY_TASK_TIME_LIMIT"]


def test_the_check_sees_the_app_built_from_settings() -> None:
    """The test above would pass vacuously if the check read another app."""
    values = settings_example()
    del values["CELERY_TASK_TIME_LIMIT"]
    values["CELERY_WORKER_PREFETCH_MULTIPLIER"] = 4
    assert celery_warnings(celery_app_from(values)) == {"pgclone.W010", "pgclone.W011"}
    values = {**settings_example(), "CELERY_BROKER_TRANSPORT_OPTIONS": {}}
    assert celery_warnings(celery_app_from(values)) == {"pgclone.W012"}


def test_beat_schedule_names_pgclone_tasks_that_exist() -> None:
    schedule = settings_example()["CELERY_BEAT_SCHEDULE"]
    named = {entry["task"] for entry in schedule.values()}
    assert {"pgclone.sweep", "pgclone.scheduled_dump"} <= named
    pgclone_tasks = {name for name in named if name.startswith("pgclone.")}
    assert pgclone_tasks <= task_names()
    assert schedule["pgclone-sweep"]["schedule"] == 60.0


def test_beat_tasks_are_routed_to_pgclones_queue() -> None:
    values = settings_example()
    app = celery_app_from(values)
    for name in ("pgclone.sweep", "pgclone.scheduled_dump"):
        assert app.amqp.router.route({}, name)["queue"].name == values["PGCLONE_CELERY_QUEUE"]


def test_settings_example_pgclone_settings_are_valid(settings: Any) -> None:
    values = settings_example()
    assert "pgclone" in values["INSTALLED_APPS"]
    assert values["DATABASES"]["default"]["ENGINE"] == "django.db.backends.postgresql"
    storage_for(values["PGCLONE_STORAGE_LOCATION"])  # raises on a malformed location
    settings.PGCLONE_DUMP_CONFIGS = values["PGCLONE_DUMP_CONFIGS"]
    settings.PGCLONE_RESTORE_CONFIGS = values["PGCLONE_RESTORE_CONFIGS"]
    for name in values["PGCLONE_DUMP_CONFIGS"]:
        assert options.resolve_dump_options(config=name).config == name
    for name in values["PGCLONE_RESTORE_CONFIGS"]:
        assert options.resolve_restore_options(config=name).pre_swap_hooks == ("migrate",)
    assert values["PGCLONE_ALLOW_RESTORE"] is False  # unless the environment opts in


# README.md ----------------------------------------------------------------------


def readme_python_blocks() -> list[str]:
    text = (DEPLOY / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_python_examples_parse() -> None:
    blocks = readme_python_blocks()
    assert blocks
    for block in blocks:
        ast.parse(block)


def test_readme_rds_hook_is_a_management_command() -> None:
    from django.core.management.base import BaseCommand

    (source,) = [block for block in readme_python_blocks() if "class Command" in block]
    namespace: dict[str, Any] = {"__name__": "rds_prep"}
    exec(compile(source, "rds_prep.py", "exec"), namespace)  # noqa: S102 - our own example
    assert issubclass(namespace["Command"], BaseCommand)
    assert "OWNER TO rds_superuser" in namespace["PREP_SQL"]
    # No % placeholders that psycopg2 would try to fill: the SQL runs without parameters.
    assert "%s" not in namespace["PREP_SQL"]
