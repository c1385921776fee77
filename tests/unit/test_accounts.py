"""Which rows of the user table are accounts that could sign in to the admin
(pgclone.pg.accounts): the columns the project's user model has, no others."""

from __future__ import annotations

from pgclone.pg import accounts
from pgclone.pg.driver import sql


def test_django_users_sign_in_when_staff_active_and_with_a_usable_password():
    users = accounts.user_model()
    assert users == accounts.SignIn("auth_user", ("is_staff", "is_active"), "password")
    assert users.condition == ["is_staff", "is_active", "password usable"]
    located = accounts.SignIn("auth_user", ("is_staff",), "password", schema="app")
    assert located.record(accounts.Counted(2, 1)) == {
        "table": "app.auth_user", "condition": ["is_staff", "password usable"],
        "count": 2, "unusable_password": 1,
    }  # fmt: skip
    assert located.record(None)["count"] is None  # could not be counted: said, not guessed


def test_a_custom_user_model_is_counted_on_the_columns_it_has(settings):
    settings.AUTH_USER_MODEL = "testapp.Author"  # no is_staff, is_active or password
    users = accounts.user_model()
    assert users == accounts.SignIn("testapp_author", (), "")
    assert users.condition == []
    statement = users.statement(sql.Identifier("testapp_author"))
    every = sql.SQL("true")
    assert statement == sql.SQL(
        "SELECT count(*) FILTER (WHERE {flags} AND {usable}), "
        "count(*) FILTER (WHERE {flags} AND NOT {usable}) FROM {rows} AS t"
    ).format(flags=every, usable=every, rows=sql.Identifier("testapp_author"))


def test_a_project_without_a_user_model_counts_nothing(settings):
    settings.AUTH_USER_MODEL = "nowhere.User"
    assert accounts.user_model() is None
