"""A job kind's workflow, declared once beside its step functions.

A :class:`Workflow` says which steps a kind of job runs and in what order,
what every step checks first, which steps can't be cancelled, what removes
what the steps made after a failure, and how a job lost mid-way may still
have finished. Everything else derives from it: the Celery tasks and chains
(``pgclone.tasks``), ``--inline`` runs, the job's step rows, cancelling and the
sweep. Adding a step to a chain is a change in one file: the one that
declares the workflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import chain, signature
from celery.canvas import Signature

from pgclone.engine import runner
from pgclone.models import Job


@dataclass(frozen=True)
class Step:
    """One step: the name people see (``fetch``, ``swap``…) and what it does."""

    name: str
    function: runner.StepFunction
    cancellable: bool = True


@dataclass(frozen=True)
class Workflow:
    kind: str
    steps: tuple[Step, ...]
    # Undoes what the steps made once the job failed or was cancelled; says what it removed.
    cleanup: runner.Cleanup
    # Checked before every step, in the worker that runs it (its settings count).
    precondition: Callable[[Job], None] | None = None
    # For a job whose worker was lost mid-step: finishes it and returns True if
    # the step had in fact done its work (the sweep calls it before failing the job).
    finish_lost: Callable[[Job], bool] | None = None

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)

    @property
    def uncancellable(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps if not step.cancellable)

    def task_name(self, step_name: str) -> str:
        """The Celery task of a step (messages already queued name it: keep it stable)."""
        return f"pgclone.{self.kind}.{step_name}"

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"No step {name!r} in the {self.kind} workflow.")

    def run(self, name: str, job_id: Any, hostname: str | None = None) -> bool:
        """Run one step through the runner; whether the chain should go on."""
        step = self.step(name)
        function = step.function
        if self.precondition is not None:
            precondition = self.precondition

            def function(job: Job) -> Any:
                precondition(job)
                return step.function(job)

        return runner.run_step(
            job_id,
            name,
            function,
            final=name == self.steps[-1].name,
            cleanup=self.cleanup,
            hostname=hostname,
        )

    def run_all(self, job_id: Any) -> None:
        """The whole chain in this process (``--inline``)."""
        for name in self.step_names:
            if not self.run(name, job_id):
                return

    def chain(self, job_id: str, queue: str | None) -> Signature:
        """The Celery chain of a job, by task name: the sender needs no task objects."""
        options = {"queue": queue} if queue else {}
        return chain(
            *(
                signature(self.task_name(name), args=(job_id,), immutable=True, **options)
                for name in self.step_names
            )
        )
