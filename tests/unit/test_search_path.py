import pytest

from pgclone.pg import search_path


@pytest.mark.parametrize(
    ("setting", "names"),
    [
        ('"$user", public', ["$user", "public"]),
        ("$user,public", ["$user", "public"]),
        ("Public, App", ["public", "app"]),
        ('"Odd, ""Schema""" ,x', ['Odd, "Schema"', "x"]),
        ("", []),
        ('""', []),
    ],
)
def test_a_search_path_setting_is_read_as_postgresql_reads_it(setting, names):
    assert search_path.split(setting) == names


def test_a_broken_setting_is_refused():
    with pytest.raises(ValueError, match="unterminated"):
        search_path.split('"public')
