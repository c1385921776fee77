"""Telling about jobs: signals once per job, failures to ADMINS and to a webhook,
and a notifier that fails never changes the job's outcome."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pgclone import api, notify
from pgclone.models import Job
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    """A webhook receiver on a loopback port: the JSON bodies it was sent."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            assert self.headers["Content-Type"] == "application/json"
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_one_post_per_failed_job(receiver, local_location, settings):
    url, received = receiver
    settings.PGCLONE_NOTIFY_WEBHOOK = url

    good = api.dump(inline=True)
    bad = api.dump(pre_dump_hooks=["testapp_fail"], inline=True)

    assert good.status == Job.Status.SUCCEEDED and bad.status == Job.Status.FAILED
    assert len(received) == 1  # the failure only, once
    (body,) = received
    assert body["id"] == str(bad.pk) and body["kind"] == "dump" and body["status"] == "failed"
    assert body["error"] == bad.error and body["database"] == bad.database_name
    assert body["text"].startswith(f"pgclone: dump of {bad.database_name} failed: Hook")
    assert body["duration"] > 0 and "key" in body


def test_a_dead_receiver_never_fails_a_job(local_location, settings, caplog):
    settings.PGCLONE_NOTIFY_WEBHOOK = f"http://127.0.0.1:{free_port()}/nobody-listens"

    good = api.dump(inline=True)
    bad = api.dump(pre_dump_hooks=["testapp_fail"], inline=True)

    assert good.status == Job.Status.SUCCEEDED
    assert bad.status == Job.Status.FAILED and "testapp_fail" in bad.error
    assert "Connection refused" not in bad.error  # the job says why it failed, not the hook
    assert any("webhook_failure" in r.getMessage() for r in caplog.records)


def test_failures_mail_the_admins(local_location, settings, mailoutbox):
    settings.PGCLONE_NOTIFY_EMAIL = True
    settings.ADMINS = [("Ops", "ops@example.com")]

    api.dump(inline=True)
    bad = api.dump(pre_dump_hooks=["testapp_fail"], inline=True)

    assert len(mailoutbox) == 1
    (mail,) = mailoutbox
    assert mail.to == ["ops@example.com"] and "dump of" in mail.subject and "failed" in mail.subject
    assert str(bad.pk) in mail.body and bad.error in mail.body


def test_signals_are_sent_once_per_job(local_location):
    seen: list[tuple[str, str]] = []

    def record(signal_name: str):
        def handler(sender, job, **kwargs):
            seen.append((signal_name, job.status))

        return handler

    handlers = {name: record(name) for name in ("started", "succeeded", "failed")}
    notify.job_started.connect(handlers["started"])
    notify.job_succeeded.connect(handlers["succeeded"])
    notify.job_failed.connect(handlers["failed"])
    try:
        api.dump(inline=True)
        api.dump(pre_dump_hooks=["testapp_fail"], inline=True)
    finally:
        notify.job_started.disconnect(handlers["started"])
        notify.job_succeeded.disconnect(handlers["succeeded"])
        notify.job_failed.disconnect(handlers["failed"])

    assert seen == [
        ("started", "running"), ("succeeded", "succeeded"),
        ("started", "running"), ("failed", "failed"),
    ]  # fmt: skip
