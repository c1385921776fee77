"""Job state: what was asked, what each step did, how far it got.

The rows only record state; the workflow lives in ``jobs`` and ``steps``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models
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


class Job(Timed, models.Model):
    class Kind(models.TextChoices):
        DUMP = "dump", "Dump"
        RESTORE = "restore", "Restore"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

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
    error = models.TextField(blank=True)
    worker_hostname = models.CharField(max_length=255, blank=True)
    # The process running the current step (see pgclone.claims): a worker that
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
