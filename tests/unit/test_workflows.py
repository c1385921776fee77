"""The workflows as declared: what the tasks, chains, cancel and the sweep derive."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pgclone.engine import runner, workflow
from pgclone.models import Job
from pgclone.steps.workflows import WORKFLOWS, workflow_for


def test_each_kind_is_declared_once_with_the_step_names_people_see():
    assert set(WORKFLOWS) == {Job.Kind.DUMP, Job.Kind.RESTORE, Job.Kind.VERIFY}
    assert workflow_for("dump").step_names == ("pre_dump", "dump", "upload")
    assert workflow_for("restore").step_names == ("fetch", "restore_temp", "pre_swap", "swap")
    assert workflow_for("verify").step_names == (
        "fetch", "restore_temp", "compare", "pre_swap", "record"
    )  # fmt: skip


def test_only_the_swap_can_not_be_cancelled():
    assert workflow_for("restore").uncancellable == ("swap",)
    assert workflow_for("dump").uncancellable == ()
    assert workflow_for("verify").uncancellable == ()


def test_task_names_stay_those_of_messages_already_queued():
    from pgclone import tasks

    assert set(tasks.STEP_TASKS) == {
        "pgclone.dump.pre_dump", "pgclone.dump.dump", "pgclone.dump.upload",
        "pgclone.restore.fetch", "pgclone.restore.restore_temp",
        "pgclone.restore.pre_swap", "pgclone.restore.swap",
        "pgclone.verify.fetch", "pgclone.verify.restore_temp", "pgclone.verify.compare",
        "pgclone.verify.pre_swap", "pgclone.verify.record",
    }  # fmt: skip
    for name, task in tasks.STEP_TASKS.items():
        assert task.name == name and task.acks_late


@pytest.mark.parametrize("queue", [None, "pgclone"])
def test_a_chain_is_sent_by_task_name_to_the_queue(queue):
    chain = workflow_for("restore").chain("job-1", queue=queue)
    assert [(s.task, s.args, s.immutable) for s in chain.tasks] == [
        (f"pgclone.restore.{name}", ("job-1",), True)
        for name in ("fetch", "restore_temp", "pre_swap", "swap")
    ]
    assert {s.options.get("queue") for s in chain.tasks} == {queue}


def test_the_precondition_runs_in_the_worker_before_every_step(monkeypatch):
    calls = []
    declared = workflow.Workflow(
        kind="dump",
        steps=(
            workflow.Step("one", lambda job: calls.append(("one", job))),
            workflow.Step("two", lambda job: calls.append(("two", job))),
        ),
        cleanup=lambda job: [],
        precondition=lambda job: calls.append(("checked", job)),
    )
    ran = []

    def run_step(job_id, name, function, *, final, cleanup, hostname):
        ran.append((name, final))
        function(SimpleNamespace(pk=job_id))
        return True

    monkeypatch.setattr(runner, "run_step", run_step)
    declared.run_all("job-1")

    assert ran == [("one", False), ("two", True)]  # the last step ends the job
    assert [what for what, _ in calls] == ["checked", "one", "checked", "two"]


def test_a_step_that_refuses_stops_an_inline_run(monkeypatch):
    declared = workflow.Workflow(
        kind="dump",
        steps=(workflow.Step("one", lambda job: None), workflow.Step("two", lambda job: None)),
        cleanup=lambda job: [],
    )
    ran = []
    monkeypatch.setattr(runner, "run_step", lambda job_id, name, *a, **k: ran.append(name))
    declared.run_all("job-1")  # run_step said "don't go on" (None)
    assert ran == ["one"]
    with pytest.raises(KeyError, match="No step 'three'"):
        declared.step("three")


def test_the_signals_stay_at_their_documented_path():
    from pgclone import notify
    from pgclone.engine import notify as engine_notify

    assert notify.job_failed is engine_notify.job_failed
    assert notify.job_started is engine_notify.job_started
    assert notify.job_succeeded is engine_notify.job_succeeded
