import pytest

from pgclone import hooks
from pgclone.exceptions import ConfigurationError, InvalidInput
from pgclone.sharing import exclusions
from pgclone.steps import options


def test_default_config_when_none_is_named(settings):
    settings.PGCLONE_DUMP_CONFIGS = {}
    resolved = options.resolve_dump_options()
    assert resolved.config == "default"
    assert resolved.exclude_models == () and resolved.pre_dump_hooks == ()
    assert resolved.database_name == settings.DATABASES["default"]["NAME"]


def test_unknown_config_names_the_known_ones(settings):
    settings.PGCLONE_DUMP_CONFIGS = {"default": {}, "nightly": {}}
    with pytest.raises(InvalidInput, match=r"Unknown config 'nigthly'.*default, nightly"):
        options.resolve_dump_options(config="nigthly")


def test_unknown_keys_in_a_config_are_reported(settings):
    settings.PGCLONE_DUMP_CONFIGS = {"default": {"exclude_model": ["auth.User"]}}
    with pytest.raises(ConfigurationError, match="unknown keys \\['exclude_model'\\]"):
        options.resolve_dump_options()


def test_command_line_exclusions_add_to_the_configs(settings):
    settings.PGCLONE_DUMP_CONFIGS = {"default": {"exclude_models": ["testapp.Secret"]}}
    resolved = options.resolve_dump_options(exclude_models=["auth.user", "testapp.Secret"])
    assert resolved.exclude_models == ("testapp.Secret", "auth.User")


def test_command_line_hooks_replace_the_configs(settings):
    settings.PGCLONE_DUMP_CONFIGS = {"default": {"pre_dump_hooks": "testapp_mark"}}
    assert options.resolve_dump_options().pre_dump_hooks == ("testapp_mark",)
    resolved = options.resolve_dump_options(pre_dump_hooks=["check", "testapp_mark --note x"])
    assert resolved.pre_dump_hooks == ("check", "testapp_mark --note x")


def test_unknown_model_label_is_refused():
    with pytest.raises(InvalidInput, match=r"Unknown model 'auth\.Usr'.*app_label\.ModelName"):
        options.resolve_dump_options(exclude_models=["auth.Usr"])


def test_hook_that_is_no_command_is_refused():
    with pytest.raises(InvalidInput, match="no management command 'not_a_command'"):
        options.resolve_dump_options(pre_dump_hooks=["not_a_command --flag"])


def test_hooks_setting_must_be_strings():
    with pytest.raises(ConfigurationError):
        hooks.normalize(["ok", 3], "PGCLONE_DUMP_CONFIGS['x']['pre_dump_hooks']")


def test_unknown_database_alias_is_refused():
    with pytest.raises(InvalidInput, match="Unknown database alias 'replica'"):
        options.resolve_dump_options(database="replica")


def test_excluding_a_model_also_excludes_what_references_it():
    tables, added = exclusions.excluded_tables(["testapp.Author"])
    assert tables == ["testapp_author", "testapp_book", "testapp_book_tags"]
    assert added == ["testapp.Book", "testapp.Book_tags"]


def test_excluding_auth_user_takes_its_dependants():
    tables, added = exclusions.excluded_tables(["auth.User"])
    assert {"auth_user", "auth_user_groups", "auth_user_user_permissions"} <= set(tables)
    assert "django_admin_log" in tables and "admin.LogEntry" in added
    assert "auth_group" not in tables


def test_a_model_nothing_references_is_excluded_alone():
    assert exclusions.excluded_tables(["testapp.Secret"]) == (["testapp_secret"], [])
