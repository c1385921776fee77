"""pgclone.W013: pgclone's jobs must reach a worker, not Celery's fallback app.

A project without its Celery app loaded is tested for real, in a process of its
own, in tests/integration/test_bad_input.py.
"""

from __future__ import annotations

import pytest
from celery import Celery

from pgclone import checks


@pytest.fixture(autouse=True)
def no_broker_in_the_environment(monkeypatch):
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)


def test_the_test_projects_app_is_loaded_and_has_a_broker():
    assert checks.celery_app_problem() is None
    assert checks.check_celery_app() == []


def test_an_app_without_a_broker_is_reported():
    with Celery("shop", set_as_current=False, fixups=[]) as app:
        message, fix = checks.celery_app_problem(app)
    assert "'shop' has no broker configured" in message and "amqp://localhost" in message
    assert "CELERY_BROKER_URL" in fix


def test_an_app_with_a_broker_is_fine():
    with Celery("shop", set_as_current=False, fixups=[], broker="redis://127.0.0.1:1/0") as app:
        assert checks.celery_app_problem(app) is None
