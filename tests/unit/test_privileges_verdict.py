"""Which roles may restore: the decision from what the server says of them."""

from __future__ import annotations

from pgclone.pg.privileges import verdict


def test_a_superuser_is_refused():
    assert verdict(150000, [("app", True, "app")], []) == "role 'app', a superuser"


def test_a_member_of_a_superuser_role_is_refused_whatever_inherits():
    why = verdict(150000, [("admin", True, "app")], [])
    assert why == "role 'app', which can become the superuser 'admin' (SET ROLE)"


def test_a_member_of_a_server_access_role_is_refused():
    memberships = [("pg_read_server_files", False, "app"), ("pg_write_server_files", False, "app")]
    why = verdict(150000, memberships, [])
    assert why == "role 'app', a member of pg_read_server_files, pg_write_server_files"


def test_createrole_is_refused_before_postgresql_16_only():
    assert "CREATEROLE" in verdict(130000, [], ["app"])
    assert "CREATEROLE" in verdict(150004, [], ["app"])
    # From 16 it grants only roles held WITH ADMIN OPTION: such a holder is a
    # member, refused as one above.
    assert verdict(160000, [], ["app"]) is None
    assert verdict(170002, [("pg_execute_server_program", False, "app")], ["app"])


def test_an_ordinary_owner_may_restore():
    assert verdict(150000, [], []) is None
