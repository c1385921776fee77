"""The named configs of PGCLONE_DUMP_CONFIGS and PGCLONE_RESTORE_CONFIGS, typed.

A config is checked and turned into a :class:`DumpConfig` or
:class:`RestoreConfig` the first time it is read, and kept; Django's
``setting_changed`` signal (``override_settings``, the test ``settings``
fixture) forgets what was read, so settings stay lazy. The system checks
parse every config at startup (``check_configs``), so a mistake shows before
any job runs; a job asking for a config parses it again the same way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from pgclone import conf, hooks
from pgclone.archive import encryption
from pgclone.exceptions import ConfigurationError, InvalidInput
from pgclone.sharing import decisions as table_decisions
from pgclone.sharing import references
from pgclone.sharing import sections as sharing
from pgclone.storage import keys

DUMP_SETTING = "PGCLONE_DUMP_CONFIGS"
RESTORE_SETTING = "PGCLONE_RESTORE_CONFIGS"
DUMP_KEYS = {
    "exclude_models",
    "pre_dump_hooks",
    "keep_last",
    "keep_days",
    "scrub",
    "subset",
    "encryption_recipients",
    "references",
    "null_keys",
    "tables",
    "exclude_tables",
}
RESTORE_KEYS = {"pre_swap_hooks", "reversible", "require_scrubbed", "keep_copy", "create_missing"}


@dataclass(frozen=True)
class DumpConfig:
    name: str
    exclude_models: tuple[str, ...] = ()  # model labels as written (resolved per job)
    pre_dump_hooks: tuple[str, ...] = ()
    keep_last: int | None = None
    keep_days: float | None = None
    # pgclone.sharing.sections, checked against the models; scrub is None without a 'scrub' section
    scrub: tuple[sharing.FieldRules, ...] | None = None
    subset: tuple[sharing.SubsetRoot, ...] = ()
    # None: PGCLONE_ENCRYPTION_RECIPIENTS applies; () : this config's dumps are not encrypted.
    encryption_recipients: tuple[str, ...] | None = None
    # 'references' and 'null_keys' (pgclone.sharing.references), for a subset
    references: tuple[references.Declared, ...] = ()
    null_keys: tuple[references.End, ...] = ()
    # 'tables' and 'exclude_tables': decisions on tables by name
    decisions: table_decisions.Decisions = field(default_factory=table_decisions.Decisions)

    @property
    def sharing(self) -> sharing.Sharing:
        """What this config asks of the data (the part pgclone.sharing reads)."""
        return sharing.Sharing(
            scrub=self.scrub,
            subset=self.subset,
            references=self.references,
            null_keys=self.null_keys,
            decisions=self.decisions,
        )


@dataclass(frozen=True)
class RestoreConfig:
    name: str
    pre_swap_hooks: tuple[str, ...] = tuple(conf.DEFAULT_RESTORE_CONFIG["pre_swap_hooks"])
    reversible: bool = False
    require_scrubbed: bool = False
    keep_copy: bool = False  # keep a copy of what the dump restored to (pgclone.steps.kept)
    create_missing: bool = False  # create the alias's database when it does not exist


def _named(setting: str, configs: Any, name: str | None, allowed: set[str]) -> tuple[str, dict]:
    name = name or "default"
    keys.validate_config_name(name)
    if not isinstance(configs, dict):
        raise ConfigurationError(f"{setting} must be a dict of named configs.")
    if name not in configs and name != "default":
        known = ", ".join(sorted(configs)) or "none"
        raise InvalidInput(f"Unknown config {name!r}: {setting} defines {known}.")
    config = configs.get(name)
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ConfigurationError(f"{setting}[{name!r}] must be a dict.")
    unknown = set(config) - allowed
    if unknown:
        raise ConfigurationError(
            f"{setting}[{name!r}] has unknown keys {sorted(unknown)}; "
            f"the known ones are {sorted(allowed)}."
        )
    return name, config


@functools.cache
def dump_config(name: str | None = None) -> DumpConfig:
    """A dump config by name (``default`` when None), checked."""
    name, config = _named(DUMP_SETTING, conf.dump_configs(), name, DUMP_KEYS)
    where = f"{DUMP_SETTING}[{name!r}]"
    models = config.get("exclude_models") or []
    if isinstance(models, str) or not isinstance(models, list | tuple):
        raise ConfigurationError(f"{where}['exclude_models'] must be a list of model labels.")
    keep_last, keep_days = config.get("keep_last"), config.get("keep_days")
    if keep_last is not None and (
        not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1
    ):
        raise ConfigurationError(f"{where}['keep_last'] must be a whole number of at least 1.")
    if keep_days is not None and (
        not isinstance(keep_days, int | float) or isinstance(keep_days, bool) or keep_days <= 0
    ):
        raise ConfigurationError(f"{where}['keep_days'] must be a positive number of days.")
    if "tables" in config and config.get("scrub") is None:
        raise ConfigurationError(
            f"{where}['tables'] decides columns of a scrubbed dump, and the config has no "
            "'scrub' section: add one ({} if the models need no rule)."
        )
    recipients = config.get("encryption_recipients")
    if recipients is not None:
        recipients = encryption.checked_recipients(recipients, f"{where}['encryption_recipients']")
    subset = sharing.parse_subset(config.get("subset") or {}, f"{where}['subset']")
    declared, null_keys = references.parse(
        config.get("references"), config.get("null_keys"), where, bool(subset)
    )
    return DumpConfig(
        name=name,
        exclude_models=tuple(models),
        pre_dump_hooks=tuple(
            hooks.normalize(config.get("pre_dump_hooks"), f"{where}['pre_dump_hooks']")
        ),
        keep_last=keep_last,
        keep_days=keep_days,
        scrub=sharing.parse_scrub(config.get("scrub"), f"{where}['scrub']"),
        subset=subset,
        encryption_recipients=recipients,
        references=declared,
        null_keys=null_keys,
        decisions=table_decisions.parse(config.get("tables"), config.get("exclude_tables"), where),
    )


@functools.cache
def restore_config(name: str | None = None) -> RestoreConfig:
    """A restore config by name (``default`` when None), checked."""
    defined = conf.restore_configs()
    if isinstance(defined, dict):  # else _named says what is wrong with it
        defined = {"default": conf.DEFAULT_RESTORE_CONFIG, **defined}
    name, config = _named(RESTORE_SETTING, defined, name, RESTORE_KEYS)
    where = f"{RESTORE_SETTING}[{name!r}]"
    hook_list = config.get("pre_swap_hooks", conf.DEFAULT_RESTORE_CONFIG["pre_swap_hooks"])
    return RestoreConfig(
        name=name,
        pre_swap_hooks=tuple(hooks.normalize(hook_list, f"{where}['pre_swap_hooks']")),
        reversible=bool(config.get("reversible", False)),
        require_scrubbed=bool(config.get("require_scrubbed", False)),
        keep_copy=bool(config.get("keep_copy", False)),
        create_missing=bool(config.get("create_missing", False)),
    )


def recipients_of(config: DumpConfig) -> tuple[str, ...]:
    """Whom a config's dumps are encrypted to: its own ``encryption_recipients``,
    else PGCLONE_ENCRYPTION_RECIPIENTS; none means not encrypted."""
    if config.encryption_recipients is not None:
        return config.encryption_recipients
    return encryption.setting_recipients()


def retention_of(name: str) -> DumpConfig:
    """The config whose retention rules apply to dumps made with ``name``: none
    (keep everything) when no such config is defined any more."""
    configs = conf.dump_configs()
    if isinstance(configs, dict) and name not in configs and name != "default":
        return DumpConfig(name=name)
    return dump_config(name)


def check_configs() -> list[str]:
    """Every defined config parsed: what is wrong with each one that fails."""
    problems = []
    for setting, names, parse in (
        (DUMP_SETTING, conf.dump_configs(), dump_config),
        (RESTORE_SETTING, conf.restore_configs(), restore_config),
    ):
        if not isinstance(names, dict):
            problems.append(f"{setting} must be a dict of named configs.")
            continue
        for name in names:
            try:
                parse(name)
            except (ConfigurationError, InvalidInput) as exc:
                problems.append(str(exc))
    return problems


@receiver(setting_changed)
def _forget(setting: str, **kwargs: Any) -> None:
    if setting in (DUMP_SETTING, RESTORE_SETTING):
        dump_config.cache_clear()
        restore_config.cache_clear()
