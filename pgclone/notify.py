"""The signals a project connects to, at the path the docs give them
(``from pgclone.notify import job_failed``); they live in the job engine
(:mod:`pgclone.engine.notify`)."""

from __future__ import annotations

from pgclone.engine.notify import job_failed, job_started, job_succeeded, payload

__all__ = ["job_failed", "job_started", "job_succeeded", "payload"]
