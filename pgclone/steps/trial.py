"""The trial restore workflow (``verify --restore``): fetch → restore_temp →
compare → pre_swap → record (declared at the end).

A dump is restored the way a real restore does it (the same ``fetch``,
``restore_temp`` and ``pre_swap`` steps) into a scratch database that nothing
uses, and never swapped in. ``compare`` checks that every table the dump
recorded arrived with its rows, before the hooks change anything; ``record``
drops the scratch database and keeps the outcome beside the dump. A failure
that says something about the dump (damaged, pg_restore or a hook failing,
rows missing) is kept there too; one that says nothing about it (the server
unreachable, the job cancelled) is only on the job.
"""

from __future__ import annotations

import functools
from typing import Any

from django.utils import timezone

from pgclone import payloads
from pgclone.engine import jobs, workflow
from pgclone.exceptions import CommandFailed, DumpDamaged, HookFailed
from pgclone.models import Job
from pgclone.pg import databases, privileges, table_counts
from pgclone.steps import kept, restore
from pgclone.steps.restore_swap import drop_own, live_conn
from pgclone.storage import keys, signing, storage_for

# Failures that are the dump's: recorded beside it as a failed trial.
DUMP_FAILURES = (DumpDamaged, CommandFailed, HookFailed)
RECORD_VERSION = 2  # 2: names the SHA-256 of the dump it restored


def _recorded(step: Any) -> Any:
    """A restore step whose failure, when it is the dump's, is kept beside the dump."""

    @functools.wraps(step)
    def run(job: Job) -> Any:
        try:
            return step(job)
        except DUMP_FAILURES as exc:
            _keep(job, "failed", error=str(exc), step=step.__name__)
            raise

    return run


def ensure_allowed(job: Job) -> None:
    """The dump's code runs here as in a restore: the same refusal of superusers.
    PGCLONE_ALLOW_RESTORE = False does not stop trials: they replace nothing."""
    privileges.refuse_privileged(live_conn(job))


def compare(job: Job) -> None:
    """Count what arrived in the scratch database; compare with what the dump recorded."""
    manifest = payloads.manifest_of(job)
    target = live_conn(job).with_name(job.result["temp_database"])
    arrived = table_counts.count_database(target)
    if manifest.tables is None:
        message = (
            f"{len(arrived)} tables arrived; the dump recorded no table list to compare "
            "with (made by an older pgclone): it restores, nothing more is known."
        )
        jobs.update_result(job, comparison={"passed": True, "tables": len(arrived)})
        jobs.set_step_message(job, "compare", message)
        return
    recorded = [table_counts.TableCount.from_dict(t) for t in manifest.tables]
    comparison = table_counts.compare(recorded, arrived)
    jobs.update_result(job, comparison=comparison.to_dict())
    if not comparison.passed:
        raise DumpDamaged(f"Dump {manifest.key} did not restore whole: {comparison.summary()}")
    jobs.set_step_message(job, "compare", comparison.summary())


def record(job: Job) -> None:
    """Drop the scratch database, then keep the outcome beside the dump."""
    with databases.maintenance(live_conn(job)) as connection:
        drop_own(connection, job.result["temp_database"], job)
    _keep(job, "passed")
    jobs.set_step_message(job, "record", f"Recorded beside {payloads.manifest_of(job).key}.")


def _keep(job: Job, outcome: str, *, error: str = "", step: str = "") -> None:
    source = payloads.restore_options(job).source
    key = keys.parse_key(source.key)
    job.refresh_from_db()
    entry: dict[str, Any] = {
        "version": RECORD_VERSION,
        "key": str(key),
        "outcome": outcome,
        "at": timezone.now().isoformat(),
        "job_id": str(job.pk),
        "requested_by": job.requested_by,
        "hooks": list(payloads.restore_options(job).pre_swap_hooks),
        "comparison": job.result.get("comparison"),
    }
    proved = (job.result.get("manifest") or {}).get("sha256")
    if proved:  # what fetch checked: the record vouches for these bytes only
        entry["sha256"] = proved
    if error:
        entry.update(error=error, step=step)
    storage_for(payloads.restore_options(job).storage_location).record_trial(
        key, signing.sign(entry)
    )
    jobs.update_result(job, trial=outcome)


def cleanup(job: Job) -> list[str]:
    """As a failed restore's: the scratch database and any unpacked dump go."""
    return restore.cleanup(job)


WORKFLOW = workflow.Workflow(
    kind=Job.Kind.VERIFY,
    steps=(
        workflow.Step("fetch", _recorded(restore.fetch)),
        workflow.Step("restore_temp", _recorded(restore.restore_temp)),
        workflow.Step("compare", _recorded(kept.keep_proved(compare))),
        workflow.Step("pre_swap", _recorded(restore.pre_swap)),
        workflow.Step("record", kept.confirming(record)),
    ),
    cleanup=cleanup,
    precondition=ensure_allowed,
)
