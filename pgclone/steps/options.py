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

from pgclone import configs, hooks
from pgclone.payloads import DumpOptions, RestoreOptions
from pgclone.pg import postgres
from pgclone.sharing import exclusions
from pgclone.storage import keys


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
        model = exclusions.model_for_label(label)
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
        keep_copy=configured.keep_copy,
        create_missing=configured.create_missing,
    )
