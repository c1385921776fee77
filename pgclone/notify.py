"""Telling people how jobs went: Django signals, and two notifiers settings turn on.

``job_started``, ``job_succeeded`` and ``job_failed`` are sent (``sender=Job``,
``job=…``) once per job, by the transition in ``pgclone.jobs`` that changed its
state; a cancelled job sends neither of the last two. Receivers run with
``send_robust``: one that raises is logged and never fails the job.

Built in, for failures:
- ``PGCLONE_NOTIFY_EMAIL = True`` mails ``ADMINS`` through Django's mail;
- ``PGCLONE_NOTIFY_WEBHOOK = "https://…"`` POSTs a JSON body (id, kind,
  database, status, error, duration, key, and a Slack-compatible ``text``),
  with a timeout, trying again a few times.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from typing import Any

from django.conf import settings
from django.core.mail import mail_admins
from django.dispatch import Signal, receiver

from pgclone.humanize import human_seconds
from pgclone.models import Job

logger = logging.getLogger("pgclone")

job_started = Signal()
job_succeeded = Signal()
job_failed = Signal()

WEBHOOK_TIMEOUT_SECONDS = 5.0
WEBHOOK_ATTEMPTS = 3


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
    if not getattr(settings, "PGCLONE_NOTIFY_EMAIL", False):
        return
    where = job.database_name or job.database_alias
    mail_admins(
        f"pgclone {job.kind} of {where} failed",
        f"Job {job.pk} ({job.kind} of {where}) failed after "
        f"{human_seconds(job.duration)}:\n\n{job.error}\n\n"
        f"See it with: manage.py pgclone show {job.pk}\n",
    )


@receiver(job_failed)
def webhook_failure(sender: Any, job: Job, **kwargs: Any) -> None:
    url = getattr(settings, "PGCLONE_NOTIFY_WEBHOOK", None)
    if url:
        post(url, payload(job))


def post(url: str, body: dict[str, Any]) -> None:
    """POST ``body`` as JSON; try again on errors, then raise the last one."""
    data = json.dumps(body).encode()
    for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
        request = urllib.request.Request(  # noqa: S310 - the URL is the project's setting
            url, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS):  # noqa: S310
                return
        except OSError:
            if attempt == WEBHOOK_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)  # a receiver restarting: give it a moment
