"""Hooks on the copy with either router: django-pgconnection where the project
wraps DATABASES with it (psycopg2), pgclone's per-thread routing anywhere else
(psycopg 3, or plain settings)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from pgclone import api, checks
from pgclone.models import Job
from pgclone.pg import driver
from pgclone.steps import routing
from tests.helpers import authors, make_dump, psql

pytestmark = pytest.mark.django_db(transaction=True)


def current_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        return cursor.fetchone()[0]


@pytest.mark.matrix
def test_per_thread_routing_moves_this_thread_only(target, test_database_name, settings):
    seen = {}

    def elsewhere():
        seen["other thread"] = current_database()
        connections.close_all()

    with routing._routed({**settings.DATABASES["target"]}):
        seen["this thread"] = current_database()
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    seen["afterwards"] = current_database()

    assert seen == {
        "this thread": target,
        "other thread": test_database_name,
        "afterwards": test_database_name,
    }


@pytest.mark.matrix
def test_hooks_run_on_the_copy_with_pgclones_own_routing(
    local_location, target, test_database_name, monkeypatch
):
    """Whatever the settings, pgclone's own routing gives the same guarantee."""
    monkeypatch.setattr(routing, "uses_pgconnection", lambda: False)
    key = make_dump("routed", local_location)

    job = api.restore(
        key, database="target", inline=True,
        pre_swap_hooks=["migrate", "testapp_mark --note on-the-copy"],
    )  # fmt: skip

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert authors(target) == ["routed"]
    notes = "SELECT coalesce(string_agg(note, ','), '') FROM testapp_mark"
    assert psql(notes, target) == "on-the-copy"
    assert psql(notes, test_database_name) == ""  # never the database pgclone runs from


def test_the_check_explains_pgconnection_under_psycopg_3(monkeypatch, settings):
    monkeypatch.setattr(routing, "uses_pgconnection", lambda: True)
    monkeypatch.setattr(driver, "NAME", "psycopg")

    (error,) = checks.check_pgconnection()

    assert error.id == "pgclone.E006"
    assert "only works with psycopg2" in error.msg and "TypeError" in error.msg
    assert "Remove the pgconnection.configure() wrapping" in error.hint


def test_the_deploy_check_says_which_routing_is_in_use():
    (info,) = checks.check_routing()
    expected = "django-pgconnection" if routing.uses_pgconnection() else "per-thread routing"
    assert info.id == "pgclone.I001" and expected in info.msg and driver.NAME in info.msg


def test_an_unsupported_django_is_named(monkeypatch):
    import django

    monkeypatch.setattr(django, "VERSION", (4, 1, 0, "final", 0))
    monkeypatch.setattr(django, "get_version", lambda: "4.1")

    (error,) = checks.check_versions()

    assert error.id == "pgclone.E005" and "Django 4.1" in error.msg
    assert "Django 4.2, 5.2, 6.0 or 6.1" in error.hint
