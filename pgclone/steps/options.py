"""Turning a request plus the PGCLONE_*_CONFIGS settings into resolved options.

Resolution happens when a job is asked for, so that bad input is refused
before anything runs; the resolved options are stored on the job and are
what every step uses.

Merging rules (documented in docs/configuration.md):
- ``exclude_models`` given on the command line are *added* to the config's,
  so a config that keeps personal data out of dumps can't be undone by
  accident;
- hooks given on the command line *replace* the config's (hooks are an
  ordered list, and replacing them is the predictable thing).
"""

from __future__ import annotations

from django.apps import apps
from django.db import models

from pgclone import configs, hooks
from pgclone.exceptions import InvalidInput
from pgclone.payloads import DumpOptions, RestoreOptions
from pgclone.pg import postgres
from pgclone.storage import keys


def model_for_label(label: str) -> type[models.Model]:
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError) as exc:
        raise InvalidInput(
            f"Unknown model {label!r} to exclude: use the 'app_label.ModelName' form "
            "of an installed model, such as 'auth.User'."
        ) from exc
    return model._meta.concrete_model


def resolve_dump_options(
    *,
    config: str | None = None,
    exclude_models: list[str] | None = None,
    pre_dump_hooks: list[str] | None = None,
    database: str = "default",
) -> DumpOptions:
    configured = configs.dump_config(config)
    labels = []
    for label in [*configured.exclude_models, *(exclude_models or [])]:
        model = model_for_label(label)
        if model._meta.label not in labels:
            labels.append(model._meta.label)
    if pre_dump_hooks is None:
        pre_dump_hooks = list(configured.pre_dump_hooks)
    hooks.validate(pre_dump_hooks)
    conn = postgres.conn_info(database)
    keys.validate_database_name(conn.name)
    return DumpOptions(
        config=configured.name,
        database=database,
        database_name=conn.name,
        exclude_models=tuple(labels),
        pre_dump_hooks=tuple(pre_dump_hooks),
        encryption_recipients=configs.recipients_of(configured),
    )


def excluded_tables(labels: list[str]) -> tuple[list[str], list[str]]:
    """Tables whose rows a dump leaves out, and the models added to keep it restorable.

    Leaving out a model's rows also leaves out the rows of every model that
    references it (its many-to-many tables, ``admin.LogEntry`` for
    ``auth.User``…): otherwise pg_restore could not re-create their foreign
    keys. The models added that way are returned so the job can say so.
    """
    excluded = {model_for_label(label) for label in labels}
    every_model = [m for m in apps.get_models(include_auto_created=True) if not m._meta.proxy]
    added = []
    changed = True
    while changed:
        changed = False
        for model in every_model:
            if model in excluded:
                continue
            if any(
                field.is_relation and field.concrete and field.related_model in excluded
                for field in model._meta.get_fields()
                if getattr(field, "many_to_one", False) or getattr(field, "one_to_one", False)
            ):
                excluded.add(model)
                added.append(model._meta.label)
                changed = True
    tables = sorted({model._meta.db_table for model in excluded})
    return tables, sorted(added)


def resolve_restore_options(
    *,
    config: str | None = None,
    pre_swap_hooks: list[str] | None = None,
    reversible: bool = False,
    database: str = "default",
) -> RestoreOptions:
    configured = configs.restore_config(config)
    if pre_swap_hooks is None:
        pre_swap_hooks = list(configured.pre_swap_hooks)
    hooks.validate(pre_swap_hooks)
    conn = postgres.conn_info(database)
    return RestoreOptions(
        config=configured.name,
        database=database,
        database_name=conn.name,
        pre_swap_hooks=tuple(pre_swap_hooks),
        reversible=bool(reversible or configured.reversible),
        require_scrubbed=configured.require_scrubbed,
    )
