"""The job kinds, each declared once as a workflow beside its step functions."""

from __future__ import annotations

from pgclone.engine.workflow import Workflow
from pgclone.steps.dump import WORKFLOW as DUMP
from pgclone.steps.restore import WORKFLOW as RESTORE
from pgclone.steps.trial import WORKFLOW as VERIFY

WORKFLOWS: dict[str, Workflow] = {w.kind: w for w in (DUMP, RESTORE, VERIFY)}


def workflow_for(kind: str) -> Workflow:
    return WORKFLOWS[kind]
