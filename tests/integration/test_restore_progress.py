"""A restore's progress moves while pg_restore runs (PostgreSQL 14+), and says
what it is doing: the server's COPY progress against the dump's size."""

from __future__ import annotations

import pytest

from pgclone import api
from pgclone.models import Job
from tests.helpers import psql, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_restore_progress_moves_during_pg_restore(celery_worker, local_location, target):
    assert int(psql("SHOW server_version_num")) >= 140000
    # About 100 MB of rows: pg_restore takes a few seconds over them.
    psql(
        "CREATE TABLE bulk AS SELECT g AS id, repeat(md5(g::text), 3) AS body "
        "FROM generate_series(1, 700000) g; CREATE INDEX bulk_body ON bulk (body)",
        target,
    )
    made = api.dump(database="target", inline=True)
    assert made.status == Job.Status.SUCCEEDED, made.error
    raw_size = made.result["manifest"]["raw_size"]

    job = api.restore(made.dump_key, database="target", pre_swap_hooks=[])
    seen: list[tuple[str, int, int]] = []

    def ended() -> bool:
        job.refresh_from_db()
        if job.current_step == "restore_temp" and job.progress_done is not None:
            seen.append((job.progress_label, job.progress_done, job.progress_total))
        return job.is_finished

    wait_for(ended, timeout=120, what="the restore to end")

    assert job.status == Job.Status.SUCCEEDED, job.error
    loading = [done for label, done, total in seen if label == "loading data" and total == raw_size]
    assert len(set(loading)) >= 2, seen  # it moved while pg_restore ran…
    assert loading == sorted(loading) and 0 < max(loading) <= raw_size  # …forwards, within bounds
    assert {label for label, _, _ in seen} <= {"unpacking the dump", "loading data",
                                               "building indexes"}  # fmt: skip
    assert psql("SELECT count(*) FROM bulk", target) == "700000"
