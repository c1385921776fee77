"""Several hosts: consecutive steps of one job on different workers.

Each worker has a temporary folder of its own (TMPDIR), and the second runs in
a mount namespace where the folder used as "local storage" is a private empty
tmpfs, as on another machine; each step is routed to the other worker than
the step before it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery import current_app

from pgclone import api
from pgclone.models import Job
from tests.helpers import ROOT, authors, make_dump, pgclone_databases, wait_for
from tests.processes import own_queue, start_worker, stop_worker, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = {
    "pgclone.dump.pre_dump": "a",
    "pgclone.dump.dump": "b",
    "pgclone.dump.upload": "a",
    "pgclone.restore.fetch": "b",
    "pgclone.restore.restore_temp": "a",
    "pgclone.restore.pre_swap": "b",
    "pgclone.restore.swap": "a",
}


def private_folder(folder: Path) -> tuple[str, ...]:
    """A command prefix that runs a worker in a mount namespace of its own, where
    ``folder`` is an empty tmpfs: what another machine would see of it."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to give a worker a folder of its own")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"can't make a mount namespace here: {probe.stderr.decode().strip()}")
    script = 'mount -t tmpfs pgclone-host-b "$1" && shift && exec "$@"'
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(folder))


def use_routes(routes: dict) -> None:
    """Route this process's tasks anew (Celery caches its routing table)."""
    current_app.conf.task_routes = routes
    current_app.amqp.flush_routes()
    current_app.amqp.router = current_app.amqp.Router()


@pytest.fixture(scope="module")
def two_hosts(test_database_name, moto_server, tmp_path_factory):
    """Workers "host-a" and "host-b", each step of a chain routed to the other one."""
    tmp_path = tmp_path_factory.mktemp("hosts")
    run = uuid.uuid4().hex[:6]
    queues = {"a": own_queue("host-a"), "b": own_queue("host-b")}
    routes = {task: {"queue": queues[host]} for task, host in STEPS.items()}
    env = {"PGCLONE_TEST_ROUTES": json.dumps(routes)}
    saved = current_app.conf.task_routes
    use_routes(routes)
    shared = tmp_path / "storage"  # host-b gets an empty folder of its own here
    shared.mkdir()
    workers = []
    try:
        for host, prefix in (("a", ()), ("b", private_folder(shared))):
            (tmp_path / host / "tmp").mkdir(parents=True)
            workers.append(
                start_worker(
                    test_database_name, tmp_path / host / "worker.log", moto=moto_server,
                    name=f"pgclone-{run}@host-{host}", queue=queues[host], prefix=prefix,
                    env={**env, "TMPDIR": str(tmp_path / host / "tmp")},
                )
            )  # fmt: skip
        yield shared
    finally:
        use_routes(saved)
        for worker in workers:
            stop_worker(worker)


def finished(job: Job) -> Job:
    return wait_for(
        lambda: Job.objects.filter(pk=job.pk, status__in=Job.FINISHED).first(),
        timeout=60,
        what="the job to finish",
    )


def step_hosts(job: Job) -> list[str]:
    return [step.worker_hostname.split("@")[1] for step in job.steps.all()]


def test_dump_and_restore_hop_between_hosts_with_s3(two_hosts, s3_location, target):
    make_dump("unused", s3_location)  # an inline dump only to have known rows in the database
    dump = finished(api.dump())
    assert dump.status == Job.Status.SUCCEEDED, dump.error
    assert step_hosts(dump) == ["host-a", "host-b", "host-a"]

    restore = finished(api.restore(dump.dump_key, database="target"))

    assert restore.status == Job.Status.SUCCEEDED, restore.error
    assert step_hosts(restore) == ["host-b", "host-a", "host-b", "host-a"]
    assert authors(target) == ["unused"]
    assert pgclone_databases() == []


def test_local_storage_that_hosts_do_not_share_fails_clearly(two_hosts, settings):
    settings.PGCLONE_STORAGE_LOCATION = str(two_hosts)
    dump = finished(api.dump())

    assert dump.status == Job.Status.FAILED
    assert "every worker must see the same folder" in dump.error
    assert dump.steps.get(name="upload").status == "failed"
    assert api.ls() == []


def test_two_restores_of_one_database_at_once(
    celery_worker,
    test_database_name,
    local_location,
    target,
    tmp_path,
):
    key = make_dump("first", local_location)
    release = tmp_path / "release"
    args = ["restore", key, "--database", "target", "--pre-swap-hook", f"testapp_wait {release}"]
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "django", "pgclone", *args],
            env=worker_env(test_database_name, PGCLONE_TEST_STORAGE=local_location),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(process.wait(timeout=120), *process.communicate()) for process in started]

    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, _, err in results if code == 1)
    assert "is already under way" in refused
    release.touch()
    accepted = Job.objects.filter(kind=Job.Kind.RESTORE, status__in=("pending", "running"))
    job = finished(accepted.get())
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert authors(target) == ["first"]
