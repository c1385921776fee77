import datetime as dt

import pytest

from pgclone.exceptions import InvalidInput
from pgclone.storage import keys

MOMENT = dt.datetime(2026, 11, 23, 23, 3, 21, 482913, tzinfo=dt.UTC)


def test_key_format_round_trips():
    key = keys.make_key("shop", "nightly", MOMENT)
    assert str(key) == "shop/20261123T230321.482913Z.nightly.dump"
    assert keys.parse_key(str(key)) == key
    assert key.created == MOMENT


def test_timestamps_sort_in_time_order_as_text():
    moments = [MOMENT + dt.timedelta(seconds=s) for s in (0, 0.5, 9, 10, 3600, 86400 * 40)]
    texts = [str(keys.make_key("db", "default", m)) for m in moments]
    assert sorted(texts) == texts


def test_local_time_is_converted_to_utc():
    local = MOMENT.astimezone(dt.timezone(dt.timedelta(hours=5)))
    assert keys.make_key("db", "default", local).timestamp == "20261123T230321.482913Z"


@pytest.mark.parametrize(
    "text",
    [
        "shop",
        "shop/latest.dump",
        "../etc/20261123T230321.482913Z.default.dump",
        "/abs/20261123T230321.482913Z.default.dump",
        "a/b/20261123T230321.482913Z.default.dump",
        "shop/20261323T230321.482913Z.default.dump",  # month 13
        "shop/20261123T230321.482913Z.de.fault.dump",
        "shop/20261123T230321.482913Z.default.dump.json",
    ],
)
def test_invalid_keys_are_refused_with_the_expected_form(text):
    with pytest.raises(InvalidInput) as error:
        keys.parse_key(text)
    assert "pgclone ls" in str(error.value) or "timestamp" in str(error.value)


def test_newest_never_picks_a_database_sharing_the_prefix():
    found = [
        keys.make_key("app", "default", MOMENT),
        keys.make_key("app2", "default", MOMENT + dt.timedelta(days=1)),
        keys.make_key("app", "default", MOMENT + dt.timedelta(hours=1)),
        keys.make_key("application", "default", MOMENT + dt.timedelta(days=2)),
    ]
    assert keys.newest(found, "app") == found[2]
    assert keys.newest(found, "ap") is None


def test_newest_never_picks_a_key_timestamped_in_the_future():
    now = MOMENT
    found = [
        keys.make_key("app", "default", now - dt.timedelta(days=1)),
        keys.make_key("app", "default", now + dt.timedelta(minutes=4)),  # clocks differ a little
        keys.make_key("app", "default", now + dt.timedelta(minutes=6)),
        keys.make_key("app", "default", now + dt.timedelta(days=900)),
    ]
    assert keys.newest(found, "app", now) == found[1]
    assert keys.newest(found[2:], "app", now) is None


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "tab\there"])
def test_database_names_that_cannot_be_keys(name):
    with pytest.raises(InvalidInput):
        keys.validate_database_name(name)


def test_database_names_with_spaces_quotes_and_unicode_are_fine():
    for name in ['My "DB"', "prod db", "données"]:
        key = keys.make_key(name, "default", MOMENT)
        assert keys.parse_key(str(key)).database == name


@pytest.mark.parametrize("name", ["a" * 63, "é" * 31 + "a"])  # 63 bytes in UTF-8
def test_database_names_up_to_postgresqls_63_bytes_are_fine(name):
    key = keys.make_key(name, "default", MOMENT)
    assert keys.parse_key(str(key)).database == name


@pytest.mark.parametrize("name", ["a" * 64, "é" * 32, "x" * 300])
def test_database_names_over_63_bytes_are_refused(name):
    with pytest.raises(InvalidInput, match="at most 63 bytes") as error:
        keys.validate_database_name(name)
    assert len(str(error.value)) < 300  # the name is cut short in the message


def test_config_names_over_100_characters_are_refused():
    assert keys.validate_config_name("c" * 100) == "c" * 100
    with pytest.raises(InvalidInput, match="at most 100"):
        keys.validate_config_name("c" * 101)


@pytest.mark.parametrize(
    "text",
    [
        f"{'d' * 64}/20261123T230321.482913Z.default.dump",
        f"shop/20261123T230321.482913Z.{'c' * 101}.dump",
        f"{'d' * 300}/20261123T230321.482913Z.{'c' * 300}.dump",
    ],
)
def test_keys_whose_parts_are_too_long_are_refused(text):
    with pytest.raises(InvalidInput, match="at most"):
        keys.parse_key(text)
