"""Named configs: parsed once, forgotten when the setting changes, all checked at startup."""

from __future__ import annotations

import pytest

from pgclone import configs
from pgclone.checks import check_settings
from pgclone.exceptions import ConfigurationError, InvalidInput


def test_a_config_is_parsed_into_a_typed_object(settings):
    settings.PGCLONE_DUMP_CONFIGS = {"safe": {"exclude_models": ["auth.User"], "keep_last": 3,
                                              "pre_dump_hooks": "clearsessions"}}  # fmt: skip
    safe = configs.dump_config("safe")
    assert safe == configs.DumpConfig(
        name="safe", exclude_models=("auth.User",), pre_dump_hooks=("clearsessions",), keep_last=3
    )
    assert configs.dump_config() == configs.DumpConfig(name="default")
    assert configs.restore_config().pre_swap_hooks == ("migrate",)


def test_changing_the_setting_is_seen_at_once(settings):
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"reversible": True}}
    assert configs.restore_config().reversible is True
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"reversible": False}}
    assert configs.restore_config().reversible is False


@pytest.mark.parametrize(
    ("dump_configs", "message"),
    [
        ({"x": {"keep_last": 0}}, "keep_last'] must be a whole number of at least 1"),
        ({"x": {"keep_days": True}}, "keep_days'] must be a positive number of days"),
        ({"x": {"exclude_model": []}}, "has unknown keys ['exclude_model']"),
        ({"x": {"exclude_models": "auth.User"}}, "must be a list of model labels"),
        ({"x": []}, "['x'] must be a dict"),
        ([], "PGCLONE_DUMP_CONFIGS must be a dict of named configs"),
    ],
)
def test_every_mistake_is_a_system_check_error(settings, dump_configs, message):
    settings.PGCLONE_DUMP_CONFIGS = dump_configs
    errors = [m for m in check_settings() if m.id == "pgclone.E003"]
    assert len(errors) == 1 and message in errors[0].msg
    if isinstance(dump_configs, dict):
        with pytest.raises(ConfigurationError, match=message.replace("[", r"\[")):
            configs.dump_config("x")


def test_an_unknown_name_is_bad_input_and_an_old_dumps_config_keeps_everything(settings):
    settings.PGCLONE_DUMP_CONFIGS = {"nightly": {"keep_last": 2}}
    with pytest.raises(InvalidInput, match="Unknown config 'nigthly'"):
        configs.dump_config("nigthly")
    assert configs.retention_of("removed-since") == configs.DumpConfig(name="removed-since")
    assert configs.retention_of("nightly").keep_last == 2
