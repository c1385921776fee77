"""Job state: what was asked, what each step did, how far it got.

The rows only record state: each kind's workflow is declared in ``steps``,
every change of state is a transition in ``jobs``; the queries that find jobs
are here, on ``Job.objects``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db import models
from django.db.models import CharField, Max
from django.db.models.functions import Cast
from django.utils import timezone


class Timed:
    started_at: Any
    finished_at: Any

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (or to now while it runs)."""
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class JobQuerySet(models.QuerySet):
    def active(self) -> JobQuerySet:
        """Pending or running."""
        return self.filter(status__in=Job.ACTIVE)

    def running_a_step(self) -> JobQuerySet:
        """Running, with a step running right now (not waiting between steps)."""
        return self.filter(
            status=Job.Status.RUNNING, steps__status=JobStep.Status.RUNNING
        ).distinct()

    def stale(self, cutoff: dt.datetime) -> JobQuerySet:
        """Running a step, with no heartbeat since ``cutoff``."""
        return self.running_a_step().filter(heartbeat_at__lt=cutoff)

    def waiting_since(self, cutoff: dt.datetime) -> list[Job]:
        """Jobs waiting for a worker to take their next step since before
        ``cutoff``: between two steps, or never started."""
        between_steps = (
            self.filter(status=Job.Status.RUNNING)
            .exclude(steps__status=JobStep.Status.RUNNING)
            .annotate(queued_since=Max("steps__finished_at"))
            .filter(queued_since__lt=cutoff)
        )
        not_started = self.filter(status=Job.Status.PENDING, created_at__lt=cutoff)
        return [*between_steps, *not_started]

    def with_id_prefix(self, prefix: str) -> JobQuerySet:
        """Jobs whose id (as text, with dashes) starts with ``prefix``."""
        return self.annotate(id_text=Cast("id", CharField())).filter(
            id_text__startswith=prefix.lower()
        )


class Job(Timed, models.Model):
    class Kind(models.TextChoices):
        DUMP = "dump", "Dump"
        RESTORE = "restore", "Restore"
        VERIFY = "verify", "Trial restore"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.PENDING, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    objects = JobQuerySet.as_manager()

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    database_alias = models.CharField(max_length=100, default="default")
    database_name = models.CharField(max_length=255, blank=True)
    dump_key = models.CharField(max_length=1024, blank=True)
    config_name = models.CharField(max_length=100, default="default")
    options = models.JSONField(default=dict, blank=True, help_text="Resolved options.")
    result = models.JSONField(default=dict, blank=True, help_text="What the steps produced.")
    requested_by = models.CharField(max_length=255, blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    current_step = models.CharField(max_length=64, blank=True)
    progress_done = models.BigIntegerField(null=True, blank=True)
    progress_total = models.BigIntegerField(null=True, blank=True)
    # What the running step is doing when it has phases ("loading data"…).
    progress_label = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    worker_hostname = models.CharField(max_length=255, blank=True)
    # The process running the current step (see pgclone.engine.claims): a worker that
    # restarts knows at once that its predecessor's steps are orphaned.
    worker_process = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("dump_database", "Can start a dump with pgclone"),
            ("restore_database", "Can restore a database with pgclone"),
        ]
        constraints = [
            # The lock that allows one restore per database at a time, wherever
            # the workers run: a second active restore row can't be inserted.
            models.UniqueConstraint(
                fields=["database_name"],
                condition=models.Q(kind="restore", status__in=["pending", "running"]),
                name="pgclone_one_active_restore",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.database_name or self.database_alias} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class JobStep(Timed, models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_hostname = models.CharField(max_length=255, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "name"], name="pgclone_jobstep_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class DumpsInStorage(Job):
    """No rows of its own: the admin lists its models on its index, and this is
    how the dumps page is listed there (seeing it takes ``view_job``)."""

    class Meta:
        proxy = True
        default_permissions = ()
        verbose_name = verbose_name_plural = "dumps in storage"
