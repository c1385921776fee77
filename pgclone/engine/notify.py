"""Telling people how jobs went: Django signals, and two notifiers settings turn on.

``job_started``, ``job_succeeded`` and ``job_failed`` are sent (``sender=Job``,
``job=…``) once per job, by the transition in ``pgclone.engine.jobs`` that changed its
state; a cancelled job sends neither of the last two. Receivers run with
``send_robust``: one that raises is logged and never fails the job.

Built in, for failures:
- ``PGCLONE_NOTIFY_EMAIL = True`` mails ``ADMINS`` through Django's mail;
- ``PGCLONE_NOTIFY_WEBHOOK = "https://…"`` POSTs a JSON body (id, kind,
  database, status, error, duration, key, and a Slack-compatible ``text``),
  within a total deadline (``pgclone.engine.webhooks``).

The transition that ends a job may run inside a step, a sweep, a command or
an admin request: none of them waits for a mail server or a receiver. The
built-in notifiers hand the delivery off: to the ``pgclone.notify_failure``
task when the job went through Celery, else (``--inline``, or a broker that
refuses the task) to a thread of this process, which waits for it at exit no
longer than its deadline.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.core.mail import get_connection, mail_admins
from django.dispatch import Signal, receiver

from pgclone import conf
from pgclone.engine import webhooks
from pgclone.engine.celery_app import celery_app_problem
from pgclone.humanize import human_seconds
from pgclone.models import Job

logger = logging.getLogger("pgclone")

job_started = Signal()
job_succeeded = Signal()
job_failed = Signal()

DELIVERY_SECONDS = webhooks.DEADLINE_SECONDS  # a mail's too (its server's timeout)
TASK_NAME = "pgclone.notify_failure"


def started(job_id: Any) -> None:
    _send(job_started, job_id)


def ended(job_id: Any) -> None:
    """After a transition ended the job: the signal for how it ended."""
    status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status == Job.Status.SUCCEEDED:
        _send(job_succeeded, job_id)
    elif status == Job.Status.FAILED:
        _send(job_failed, job_id)


def _send(signal: Signal, job_id: Any) -> None:
    try:
        job = Job.objects.get(pk=job_id)
        for handler, answer in signal.send_robust(sender=Job, job=job):
            if isinstance(answer, Exception):
                logger.warning("pgclone: a receiver of job %s's signal failed (%s): %s",
                               job_id, getattr(handler, "__name__", handler), answer)  # fmt: skip
    except Exception as exc:  # telling about a job must never change its outcome
        logger.warning("pgclone: could not notify about job %s: %s", job_id, exc)


def payload(job: Job) -> dict[str, Any]:
    """What a webhook receives about a job."""
    where = job.database_name or job.database_alias
    text = f"pgclone: {job.kind} of {where} {job.status}"
    if job.error:
        text += f": {job.error.splitlines()[0]}"
    return {
        "id": str(job.pk),
        "kind": job.kind,
        "database": where,
        "status": job.status,
        "error": job.error,
        "duration": job.duration,
        "key": job.dump_key,
        "text": text,
    }


@receiver(job_failed)
def email_failure(sender: Any, job: Job, **kwargs: Any) -> None:
    if conf.notify_email():
        hand_off("email", job)


@receiver(job_failed)
def webhook_failure(sender: Any, job: Job, **kwargs: Any) -> None:
    url = conf.notify_webhook()
    if url:
        webhooks.parse_url(url)  # a URL pgclone refuses: said at once, in this log
        hand_off("webhook", job)


def hand_off(channel: str, job: Job) -> None:
    """Have ``channel`` ("email" or "webhook") tell about the failed ``job``,
    away from whatever ended it."""
    body = payload(job)
    through_celery = bool(job.task_id) or _in_celery_task()
    if not (through_celery and _send_task(channel, body)):
        deliveries.start(channel, body)


def _in_celery_task() -> bool:
    from celery import current_task

    return bool(current_task)


def _send_task(channel: str, body: dict[str, Any]) -> bool:
    """Send the delivery to a worker; False when it can't be sent from here."""
    from celery import current_app

    if celery_app_problem() is not None:
        return False
    try:  # no retries: a broker that is down must not hold a request either
        current_app.send_task(
            TASK_NAME, args=(channel, body), queue=conf.celery_queue(), retry=False
        )
    except Exception as exc:
        logger.warning("pgclone: the %s about job %s is sent from here: the Celery broker "
                       "did not take it (%s)", channel, body["id"], exc)  # fmt: skip
        return False
    return True


def deliver(channel: str, body: dict[str, Any]) -> None:
    """Mail or POST a failed job's ``payload``; what goes wrong is logged, not raised."""
    try:
        if channel == "webhook":
            url = conf.notify_webhook()
            if url:
                webhooks.post(url, body)
        else:
            _mail(body)
    except Exception as exc:
        logger.warning("pgclone: the %s about job %s failed: %s", channel, body["id"], exc)


def _mail(body: dict[str, Any]) -> None:
    what = f"{body['kind']} of {body['database']}"
    timeout = getattr(settings, "EMAIL_TIMEOUT", None) or DELIVERY_SECONDS
    mail_admins(
        f"pgclone {what} failed",
        f"Job {body['id']} ({what}) failed after {human_seconds(body['duration'])}:\n\n"
        f"{body['error']}\n\nSee it with: manage.py pgclone show {body['id']}\n",
        connection=get_connection(timeout=timeout),
    )


class Deliveries:
    """The deliveries this process makes in threads of its own (``--inline``),
    each given DELIVERY_SECONDS; the process waits for them at exit, no longer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[threading.Thread, float] = {}  # each one's deadline
        self._waits_at_exit = False

    def start(self, channel: str, body: dict[str, Any]) -> None:
        """In the thread that ended the job."""
        thread = threading.Thread(
            target=self._deliver, args=(channel, body), name="pgclone-notify", daemon=True
        )
        with self._lock:
            if not self._waits_at_exit:
                atexit.register(self.wait)
                self._waits_at_exit = True
            self._running[thread] = time.monotonic() + DELIVERY_SECONDS
        thread.start()

    def _deliver(self, channel: str, body: dict[str, Any]) -> None:
        """In the delivery's own thread."""
        try:
            deliver(channel, body)
        finally:
            with self._lock:
                self._running.pop(threading.current_thread(), None)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the deliveries under way, each until its deadline at most (and
        ``timeout``); True when none is left."""
        end = time.monotonic() + (DELIVERY_SECONDS if timeout is None else timeout)
        with self._lock:
            running = dict(self._running)
        for thread, deadline in running.items():
            thread.join(max(0.0, min(deadline + 1.0, end) - time.monotonic()))
        with self._lock:
            return not self._running


deliveries = Deliveries()
