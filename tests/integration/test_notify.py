"""Telling about jobs: signals once per job, failures to ADMINS and to a webhook,
and a notifier that fails never changes the job's outcome, nor holds whoever
ended the job."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command

from pgclone import api
from pgclone.checks import check_settings
from pgclone.engine import notify
from pgclone.models import Job
from tests.helpers import free_port, wait_for
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)


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
    assert notify.deliveries.wait(timeout=15)
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
    assert notify.deliveries.wait(timeout=15)
    assert any(
        f"the webhook about job {bad.pk} failed" in r.getMessage()
        and "could not be reached" in r.getMessage()
        for r in caplog.records
    )


def test_failures_mail_the_admins(local_location, settings, mailoutbox):
    settings.PGCLONE_NOTIFY_EMAIL = True
    settings.ADMINS = [("Ops", "ops@example.com")]

    api.dump(inline=True)
    bad = api.dump(pre_dump_hooks=["testapp_fail"], inline=True)

    assert notify.deliveries.wait(timeout=15)
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


@pytest.fixture
def serve() -> Iterator:
    """Start loopback HTTP servers with a given handler; all stopped afterwards.
    Handlers that take their time end once ``stopping`` is set."""
    servers: list[ThreadingHTTPServer] = []
    stopping = threading.Event()

    def start(handler: type[BaseHTTPRequestHandler]) -> str:
        handler.stopping = stopping
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    stopping.set()
    for server in servers:
        server.shutdown()
        server.server_close()


class Quiet(BaseHTTPRequestHandler):
    stopping: threading.Event

    def log_message(self, *args: object) -> None:
        pass


class Dripping(Quiet):
    """Answers a POST with a header line every second, 30 of them: each read of
    its answer gets something well within any per-read timeout."""

    hung_up: list[float] = []  # when the client hung up (time.time())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        try:
            self.wfile.write(b"HTTP/1.1 204 No Content\r\n")
            for line in range(30):
                if self.stopping.wait(1):
                    return
                self.wfile.write(f"X-Drip-{line}: .\r\n".encode())
            self.wfile.write(b"\r\n")
        except OSError:
            Dripping.hung_up.append(time.time())


def test_a_dripping_receiver_holds_no_command_and_is_given_up_at_the_deadline(
    serve, local_location, settings, caplog
):
    settings.PGCLONE_NOTIFY_WEBHOOK = serve(Dripping) + "/hook"
    caplog.set_level(logging.WARNING, logger="pgclone")

    started = time.time()
    with pytest.raises(CommandError):
        call_command("pgclone", "dump", "--inline", "--pre-dump-hook", "testapp_fail")

    assert Job.objects.get().status == Job.Status.FAILED
    assert time.time() - started < 5  # the command did not wait for the receiver
    assert notify.deliveries.wait(timeout=notify.DELIVERY_SECONDS + 5)
    (gave_up,) = [r for r in caplog.records if "the webhook about job" in r.getMessage()]
    assert "did not answer within 10 s: gave up" in gave_up.getMessage()
    assert 9 <= gave_up.created - started <= 13  # ten seconds in all, not ten per read
    hung_up = wait_for(lambda: Dripping.hung_up, timeout=5, what="the receiver to see it")
    assert hung_up[0] - started < 14  # while the receiver still had lines to drip (30 s)


def test_a_redirect_is_not_followed(serve, local_location, settings, caplog):
    followed: list[str] = []

    class Elsewhere(Quiet):
        def do_GET(self) -> None:
            followed.append(self.path)
            self.send_response(204)
            self.end_headers()

        do_POST = do_GET

    elsewhere = serve(Elsewhere) + "/elsewhere"

    class Redirecting(Quiet):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)
            self.send_header("Location", elsewhere)
            self.end_headers()

    settings.PGCLONE_NOTIFY_WEBHOOK = serve(Redirecting) + "/hook"

    bad = api.dump(pre_dump_hooks=["testapp_fail"], inline=True)

    assert notify.deliveries.wait(timeout=15)
    assert followed == []
    assert any(
        f"the webhook about job {bad.pk} failed" in r.getMessage()
        and "answered HTTP 302, a redirect, which pgclone does not follow" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("scheme", ["file", "ftp"])
def test_only_http_urls_are_posted_to(scheme, tmp_path, local_location, settings, caplog):
    target = tmp_path / "hook.txt"
    target.write_text("not a receiver")
    url = f"file://{target}" if scheme == "file" else f"ftp://127.0.0.1:{free_port()}/hook"
    settings.PGCLONE_NOTIFY_WEBHOOK = url

    (error,) = [m for m in check_settings() if m.id == "pgclone.E011"]
    assert f"must be an http:// or https:// URL with a host, not a {scheme}:// URL" in error.msg
    assert str(target) not in error.msg  # the URL may hold a token: never repeated

    bad = api.dump(pre_dump_hooks=["testapp_fail"], inline=True)

    assert bad.status == Job.Status.FAILED and "testapp_fail" in bad.error
    assert notify.deliveries.wait(timeout=15)
    refused = [r.getMessage() for r in caplog.records if r.name == "pgclone"]
    assert len(refused) == 1 and "(webhook_failure)" in refused[0]
    assert f"not a {scheme}:// URL" in refused[0]


def test_a_job_run_by_a_worker_is_told_about_by_a_task(
    receiver, test_database_name, moto_server, tmp_path, settings
):
    url, received = receiver
    queue = own_queue("notify")
    settings.PGCLONE_CELERY_QUEUE = queue
    settings.PGCLONE_STORAGE_LOCATION = str(tmp_path / "dumps")
    worker = start_worker(
        test_database_name,
        tmp_path / "worker.log",
        moto=moto_server,
        queue=queue,
        env={"PGCLONE_TEST_NOTIFY_WEBHOOK": url, "PGCLONE_TEST_CELERY_QUEUE": queue},
    )
    try:
        job = api.dump(pre_dump_hooks=["testapp_fail"])
        wait_for(lambda: len(received) == 1, what="the webhook's POST")
    finally:
        stop_worker(worker)

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert received[0]["id"] == str(job.pk) and received[0]["status"] == "failed"
    assert "pgclone.notify_failure" in worker.output()  # a task of its own, not the step
