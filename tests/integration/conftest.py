"""The integration tier: every test under this folder needs the real services
(PostgreSQL, Redis, a Celery worker, moto's S3 server), whose fixtures are here."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    TARGET,
    clone_database,
    drop_target_databases,
    free_port,
    pgclone_databases,
    s3_client,
    wait_for,
)
from tests.processes import (
    PrivateRedis,
    Worker,
    pinging_through,
    run_pgclone,
    start_worker,
    stop_worker,
)

# moto accepts any credentials; set them before any process (the worker) starts.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session", autouse=True)
def _broker_cleaned() -> Iterator[None]:
    """After the session (and its workers): what the shared Redis broker holds for
    this session's queues (their bindings, messages never taken or never
    acknowledged). Other sessions' are left alone; without a reachable broker
    there is nothing to remove."""
    yield
    import redis
    from django.conf import settings

    session = os.environ.get("PGCLONE_TEST_SESSION")
    if not session:
        return
    with contextlib.suppress(redis.exceptions.RedisError):
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2)
        for key in client.scan_iter(match=f"*-{session}*", count=500):
            client.delete(key)
        # Messages of workers killed on purpose, which the broker would hand back
        # to those queues once their visibility timeout is over.
        for tag, message in client.hscan_iter("unacked"):
            if f"-{session}".encode() in message:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tier is its folder: every test under it is marked ``integration``.
    These need PostgreSQL and Redis: stop at once, naming what is missing, when
    any is collected and they don't answer. The unit tests (``pytest
    tests/unit``) need no service at all, and never load this file."""
    ours = [item for item in items if item.path.resolve().is_relative_to(HERE)]
    for item in ours:
        item.add_marker(pytest.mark.integration)
    if not ours:
        return
    missing = [
        name
        for name, port in (("PostgreSQL", 5432), ("Redis", 6379))
        if not _reachable("127.0.0.1", port)
    ]
    if missing:
        pytest.exit(
            f"{' and '.join(missing)} not reachable on 127.0.0.1: run the tests with "
            "`bash tests/run.sh`, which starts the local servers.",
            returncode=3,
        )


@pytest.fixture(scope="session")
def test_database_name(django_db_setup: None, django_db_blocker: Any) -> str:
    from django.db import connection

    from pgclone.engine.threads import share_database_settings

    share_database_settings()  # threads (the live server's) must see the test database too
    with django_db_blocker.unblock():
        return connection.settings_dict["NAME"]


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(endpoint + "/", timeout=1)  # noqa: S310 - loopback only
            return True
        return False

    try:
        wait_for(answers, timeout=30, what="the moto S3 server")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_location(moto_server: str, settings: Any) -> Iterator[str]:
    """A fresh bucket as PGCLONE_STORAGE_LOCATION; emptied and removed afterwards."""
    client = s3_client(moto_server)
    bucket = f"pgclone-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    settings.PGCLONE_S3_ENDPOINT_URL = moto_server
    settings.PGCLONE_STORAGE_LOCATION = f"s3://{bucket}/dumps"
    yield settings.PGCLONE_STORAGE_LOCATION
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    for upload in uploads:
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that fills up for real."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"can't mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def outbox() -> Iterator[Path]:
    """A folder the database server's OS user may write to: where planted code
    that runs with a superuser's rights leaves its mark (COPY … TO PROGRAM)."""
    path = Path(tempfile.mkdtemp(prefix="pgclone-outbox-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def local_location(tmp_path: Path, settings: Any) -> str:
    settings.PGCLONE_STORAGE_LOCATION = str(tmp_path / "dumps")
    return settings.PGCLONE_STORAGE_LOCATION


@pytest.fixture(scope="session")
def celery_worker(
    test_database_name: str, moto_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """One real worker process for the session, on this session's own queue."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = start_worker(test_database_name, log, moto=moto_server)
    yield worker
    stop_worker(worker)


@pytest.fixture
def pgclone_cli(test_database_name: str, moto_server: str) -> Callable[..., Any]:
    def run(*args: str, location: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return run_pgclone(
            *args, database=test_database_name, location=location, moto=moto_server, **kwargs
        )

    return run


@pytest.fixture
def locked_table(test_database_name: str) -> Iterator[None]:
    """A table locked by another session: pg_dump waits for it until stopped."""
    from tests import pg

    holder = pg.connect(test_database_name)
    with holder.cursor() as cursor:
        cursor.execute("LOCK TABLE testapp_secret IN ACCESS EXCLUSIVE MODE")
    yield
    holder.rollback()
    holder.close()


@pytest.fixture
def target(test_database_name: str) -> Iterator[str]:
    """The database restores go into, holding the rows 'target-only' to start with."""
    from tests.testapp.models import Author

    Author.objects.create(name="target-only")
    clone_database(test_database_name, TARGET)
    Author.objects.all().delete()
    yield TARGET
    drop_target_databases()
    assert pgclone_databases() == []


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A running PrivateRedis; stopped and its folder removed afterwards."""
    import shutil

    if not shutil.which("redis-server"):
        pytest.skip("needs a local redis-server")
    folder = tmp_path_factory.mktemp("redis")
    server = PrivateRedis(folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def private_redis_worker(
    private_redis: PrivateRedis, test_database_name: str, moto_server: str, tmp_path: Path
) -> Iterator[Worker]:
    """A worker (solo pool) whose broker is the test's private Redis. Jobs reach it
    from a ``manage.py pgclone`` process run with ``env=private_redis.env``."""
    with pinging_through(private_redis.url):
        worker = start_worker(
            test_database_name,
            tmp_path / "worker.log",
            moto=moto_server,
            queue=private_redis.env["PGCLONE_TEST_QUEUE"],
            pool="solo",
            env=private_redis.env,
        )
    yield worker
    stop_worker(worker)


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium (Debian's chromium and chromium-driver) driven by Selenium."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (tests/run.sh does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
