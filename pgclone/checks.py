"""Django system checks: problems found at start-up rather than mid-job."""

from __future__ import annotations

import shutil
from typing import Any

from django.conf import settings
from django.core import checks

from pgclone import conf, configs
from pgclone.engine.celery_app import celery_app_problem
from pgclone.exceptions import ConfigurationError, PgCloneError
from pgclone.pg import postgres


@checks.register("pgclone")
def check_client_tools(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Warning(
            f"{program} is not on PATH.",
            hint="Install the PostgreSQL client tools on every machine that runs pgclone jobs.",
            id="pgclone.W001",
        )
        for program in ("pg_dump", "pg_restore", "psql")
        if shutil.which(program) is None
    ]


@checks.register("pgclone")
def check_default_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    engine = settings.DATABASES.get("default", {}).get("ENGINE")
    if engine not in postgres.POSTGRES_ENGINES:
        return [
            checks.Error(
                f"The default database uses {engine!r}.",
                hint="pgclone dumps and restores PostgreSQL databases only.",
                id="pgclone.E001",
            )
        ]
    return []


@checks.register("pgclone")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from pgclone.storage import get_storage

    errors = []
    try:
        get_storage()
    except PgCloneError as exc:
        errors.append(checks.Error(str(exc), id="pgclone.E002"))
    # Every named config, parsed as a job would: a mistake shows at startup.
    errors += [checks.Error(problem, id="pgclone.E003") for problem in configs.check_configs()]
    return errors + _security_setting_errors() + _jobs_errors()


def _jobs_errors() -> list[checks.CheckMessage]:
    """The jobs settings, which a dump or restore would otherwise fail on mid-job."""
    found = []
    for name, check_id in (
        (conf.DUMP_JOBS_SETTING, "pgclone.E014"),
        (conf.RESTORE_JOBS_SETTING, "pgclone.E015"),
    ):
        problem = conf.jobs_problem(name, conf.as_set(name))
        if problem:
            found.append(checks.Error(problem, hint=conf.jobs_hint(name), id=check_id))
    return found


def _security_setting_errors() -> list[checks.CheckMessage]:
    errors = []
    extra = conf.s3_extra_args()
    if not isinstance(extra, dict):
        errors.append(
            checks.Error(
                f"PGCLONE_S3_EXTRA_ARGS is a {type(extra).__name__}, not a dict.",
                hint="Write it as a dict of put_object arguments, such as "
                '{"ServerSideEncryption": "AES256"}.',
                id="pgclone.E007",
            )
        )
    sources = conf.as_set("PGCLONE_LOCAL_SOURCES")
    if sources is not None and (
        not isinstance(sources, list | tuple | set | frozenset)
        or not all(isinstance(name, str) for name in sources)
    ):
        errors.append(
            checks.Error(
                "PGCLONE_LOCAL_SOURCES must be a list of database names (or None for any).",
                id="pgclone.E008",
            )
        )
    key = conf.as_set("PGCLONE_SIGNING_KEY")
    if key is not None and not isinstance(key, str):
        errors.append(
            checks.Error(
                f"PGCLONE_SIGNING_KEY is a {type(key).__name__}, not a string.",
                hint="Set it to a long random secret string, kept out of the dump storage.",
                id="pgclone.E009",
            )
        )
    fallbacks = conf.signing_key_fallbacks()
    if not isinstance(fallbacks, list | tuple) or not all(
        isinstance(secret, str) and secret for secret in fallbacks
    ):
        errors.append(
            checks.Error(
                "PGCLONE_SIGNING_KEY_FALLBACKS must be a list of strings (older signing keys).",
                hint='Write it as a list, such as ["the-previous-key"], or leave it unset.',
                id="pgclone.E012",
            )
        )
    errors += _encryption_errors()
    errors += _webhook_errors()
    if conf.allow_superuser_restore():
        errors.append(
            checks.Warning(
                "PGCLONE_ALLOW_SUPERUSER_RESTORE is on: restores may run as a superuser, and "
                "then run the dump's index expressions, triggers, defaults and SECURITY "
                "DEFINER functions as one: any role that could create objects in a database "
                "you restore from could run programs on the database server.",
                hint="Connect as the role that owns the database (with CREATEDB) and remove "
                "the setting; see pgclone's docs, docs/security.md.",
                id="pgclone.W015",
            )
        )
    return errors


def _webhook_errors() -> list[checks.CheckMessage]:
    from pgclone.engine import webhooks

    url = conf.notify_webhook()
    try:
        if url:
            webhooks.parse_url(url)
    except ConfigurationError as exc:
        return [checks.Error(str(exc), hint="Or set it to None.", id="pgclone.E011")]
    return []


def _encryption_errors() -> list[checks.CheckMessage]:
    from pgclone.archive import encryption

    found = [
        checks.Error(
            problem,
            hint="Run `manage.py pgclone keygen` for a new key pair.",
            id="pgclone.E010",
        )
        for problem in encryption.recipient_problems(
            conf.encryption_recipients(), encryption.RECIPIENTS_SETTING
        )
    ]
    found += [
        checks.Warning(
            problem,
            hint="Restores and verify of encrypted dumps fail until it is fixed.",
            id="pgclone.W016",
        )
        for problem in encryption.identity_problems()
    ]
    return found


# What pgclone is tested with; older releases are refused, newer ones warned about.
SUPPORTED_DJANGO = ((4, 2), (6, 1))
MINIMUM_DRIVERS = {"psycopg2": (2, 9, 9), "psycopg": (3, 1, 8)}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


@checks.register("pgclone")
def check_kept_copies(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """PGCLONE_KEPT_COPIES and PGCLONE_KEPT_COPIES_BYTES."""
    found = []
    for name, value, least in (
        ("PGCLONE_KEPT_COPIES", conf.kept_copies(), 0),
        ("PGCLONE_KEPT_COPIES_BYTES", conf.kept_copies_bytes(), 1),
    ):
        if value is None and name.endswith("BYTES"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            found.append(
                checks.Error(
                    f"{name} must be a whole number of at least {least}, not {value!r}.",
                    hint="PGCLONE_KEPT_COPIES = 0 keeps none; PGCLONE_KEPT_COPIES_BYTES = None "
                    "sets no bound on their size.",
                    id="pgclone.E050" if name == "PGCLONE_KEPT_COPIES" else "pgclone.E051",
                )
            )
    return found


@checks.register("pgclone")
def check_versions(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    import django

    from pgclone.pg import driver

    supported = "Django 4.2, 5.2, 6.0 or 6.1 with psycopg2 >= 2.9.9 or psycopg >= 3.1.8"
    found = []
    lowest, highest = SUPPORTED_DJANGO
    if django.VERSION[:2] < lowest:
        found.append(
            checks.Error(
                f"pgclone does not support Django {django.get_version()}.",
                hint=f"pgclone runs with {supported}: upgrade Django.",
                id="pgclone.E005",
            )
        )
    elif django.VERSION[:2] > highest:
        found.append(
            checks.Warning(
                f"pgclone has not been tested with Django {django.get_version()}.",
                hint=f"pgclone is tested with {supported}.",
                id="pgclone.W014",
            )
        )
    if _version_tuple(driver.VERSION) < MINIMUM_DRIVERS[driver.NAME]:
        minimum = ".".join(map(str, MINIMUM_DRIVERS[driver.NAME]))
        found.append(
            checks.Error(
                f"pgclone does not support {driver.NAME} {driver.VERSION}.",
                hint=f"Upgrade {driver.NAME} to {minimum} or newer ({supported}).",
                id="pgclone.E005",
            )
        )
    return found


@checks.register("pgclone")
def check_pgconnection(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """django-pgconnection's wrapper only works with psycopg2: with psycopg 3 every
    query of the project fails, not only pgclone's."""
    from pgclone.pg import driver
    from pgclone.steps import routing

    if routing.uses_pgconnection() and driver.NAME != "psycopg2":
        return [
            checks.Error(
                "DATABASES is wrapped with pgconnection.configure(), but Django uses "
                f"psycopg 3 ({driver.VERSION}): django-pgconnection only works with psycopg2, "
                "and every database query of the project fails with 'TypeError: argument 1 "
                "must be psycopg2.extensions.connection'.",
                hint="Remove the pgconnection.configure() wrapping (pgclone routes hooks to "
                "the copy itself with psycopg 3), or use psycopg2 instead of psycopg.",
                id="pgclone.E006",
            )
        ]
    return []


@checks.register("pgclone", deploy=True)
def check_routing(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from pgclone.pg import driver
    from pgclone.steps import routing

    return [
        checks.Info(
            f"pgclone runs hooks on the copy through {routing.routing_in_use()} "
            f"(Django uses {driver.NAME} {driver.VERSION}).",
            id="pgclone.I001",
        )
    ]


@checks.register("pgclone")
def check_celery(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The Celery settings long jobs need (see "Running a worker" in docs/getting-started.md).

    They are read from Celery's current app: the project must load its Celery
    app when Django starts (in the project package's ``__init__``)."""
    from celery import current_app

    config = current_app.conf
    found = []
    if (config.worker_prefetch_multiplier or 0) > 1:
        found.append(
            checks.Warning(
                f"CELERY_WORKER_PREFETCH_MULTIPLIER is {config.worker_prefetch_multiplier}.",
                hint="Set it to 1: a worker busy with a long dump should not hold other "
                "jobs' steps it has prefetched.",
                id="pgclone.W010",
            )
        )
    time_limit = config.task_time_limit
    if not time_limit:
        found.append(
            checks.Warning(
                "No CELERY_TASK_TIME_LIMIT is set.",
                hint="A hung pg_dump or pg_restore would hold its worker forever: set a limit "
                "above your longest step (for instance 6 hours for a large database).",
                id="pgclone.W011",
            )
        )
    broker = str(config.broker_url or "")
    if broker.startswith(("redis://", "rediss://")):
        visibility = (config.broker_transport_options or {}).get("visibility_timeout", 3600)
        if time_limit and visibility < time_limit:
            found.append(
                checks.Warning(
                    f"The Redis visibility timeout ({visibility}s) is shorter than "
                    f"CELERY_TASK_TIME_LIMIT ({time_limit}s).",
                    hint="Redis hands a step still running to another worker after the "
                    "visibility timeout. pgclone notices and skips the copy, but set "
                    "CELERY_BROKER_TRANSPORT_OPTIONS = {'visibility_timeout': …} above the "
                    "time limit.",
                    id="pgclone.W012",
                )
            )
    return found


@checks.register("pgclone", checks.Tags.database)
def check_dump_role(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Dumps made as a superuser (run only with --database, or by migrate: image
    builds that run collectstatic need no database)."""
    from pgclone.pg import privileges

    found = []
    for alias in databases or ():
        if settings.DATABASES.get(alias, {}).get("ENGINE") not in postgres.POSTGRES_ENGINES:
            continue
        try:
            warning = privileges.superuser_dump_warning(postgres.conn_info(alias))
        except PgCloneError:
            continue  # unreachable: Django's own checks say so
        if warning:
            found.append(checks.Warning(warning, id="pgclone.W020", obj=alias))
    return found


@checks.register("pgclone", checks.Tags.database)
def check_scrub_decisions(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Configs that scrub and leave columns of the database undecided (run only
    with --database, or by migrate: it reads each database's catalog). A
    warning: the dump is where it is refused, not every command."""
    from pgclone.pg import driver
    from pgclone.steps import leaving_out

    found = []
    for alias in databases or ():
        if settings.DATABASES.get(alias, {}).get("ENGINE") not in postgres.POSTGRES_ENGINES:
            continue
        for name in leaving_out.scrubbing_configs():
            try:
                undecided = leaving_out.review_config(name, alias).review.undecided
            except (PgCloneError, driver.Error):
                continue  # unreachable, or a config the database contradicts: the dump says
            if undecided:
                found.append(
                    checks.Warning(
                        f"{configs.DUMP_SETTING}[{name!r}] scrubs, but decides nothing for "
                        f"{len(undecided)} column(s) of {alias!r} that can hold personal or "
                        f"secret data: {', '.join(n.name for n in undecided)}.",
                        hint="Its dumps are refused until each has a scrub rule ('keep' "
                        "keeps it), or its table is kept or left out by name. "
                        f"`manage.py pgclone scrub-check --config {name} --skeleton` prints "
                        "them as config text.",
                        id="pgclone.W030",
                        obj=alias,
                    )
                )
    return found


@checks.register("pgclone")
def check_require_scrubbed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """require_scrubbed believes only signed manifests: without a signing key it
    would refuse every dump, so say so at startup."""
    if conf.signing_key():
        return []
    hint = (
        "Set PGCLONE_SIGNING_KEY, the same secret on the machines that dump: only a "
        "signed manifest proves a dump was scrubbed (whoever can write to the storage "
        "can write 'scrubbed' into one)."
    )
    found = []
    if conf.require_scrubbed():
        found.append(
            checks.Error(
                "PGCLONE_REQUIRE_SCRUBBED is on, but PGCLONE_SIGNING_KEY is not set: every "
                "restore and trial restore of a dump would be refused.",
                hint=hint,
                id="pgclone.E040",
            )
        )
    defined = conf.restore_configs()
    for name in defined if isinstance(defined, dict) else ():
        try:
            required = configs.restore_config(name).require_scrubbed
        except PgCloneError:  # pgclone.E003 says what is wrong with it
            continue
        if required:
            found.append(
                checks.Error(
                    f"{configs.RESTORE_SETTING}[{name!r}] has require_scrubbed, but "
                    "PGCLONE_SIGNING_KEY is not set: every restore of a dump with it would "
                    "be refused.",
                    hint=hint,
                    id="pgclone.E041",
                )
            )
    return found


@checks.register("pgclone", checks.Tags.database)
def check_template_database(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """PGCLONE_TEMPLATE_DATABASE's type always; with the databases checked
    (`check --database ALIAS`, `migrate`), that each one's template exists, is a
    template and has the database's encoding and locale."""
    from pgclone.pg import databases as server
    from pgclone.pg import driver, extensions

    problem = extensions.setting_problem(conf.as_set(extensions.SETTING))
    if problem:
        return [checks.Error(problem, id="pgclone.E013")]
    found = []
    for alias in databases or ():
        template = conf.template_database(alias)
        if not template or alias not in settings.DATABASES:
            continue
        try:
            live = postgres.conn_info(alias)
            with server.maintenance(live) as connection:
                problems = extensions.template_problems(connection, template, live.name)
        except (PgCloneError, driver.Error):
            continue  # not PostgreSQL, or unreachable: other checks, and the restore, say so
        found += [checks.Error(f"{alias}: {text}", id="pgclone.E013") for text in problems]
    return found


@checks.register("pgclone")
def check_celery_app(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    problem = celery_app_problem()
    if problem is None:
        return []
    message, fix = problem
    # A warning, not an error: the project's other commands (migrate, runserver)
    # must go on working; pgclone itself refuses to send a job (require_celery_app).
    hint = f"{fix}, or run jobs with --inline."
    return [checks.Warning(message, hint=hint, id="pgclone.W013")]


def require_celery_app(job: Any) -> None:
    """Before a job is sent to Celery: if it could never reach a worker from here
    (pgclone.W013), fail it and raise ConfigurationError instead."""
    problem = celery_app_problem()
    if problem is None:
        return
    from pgclone.engine import jobs
    from pgclone.models import Job

    message, fix = problem
    error = ConfigurationError(f"{message} {fix}, or run the job in this process with --inline.")
    jobs.end_job(job.pk, Job.Status.FAILED, str(error))
    raise error
