"""Fixtures on real services: PostgreSQL, a Redis-backed Celery worker, moto's S3 server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

# Plain asserts in the shared storage contract should say what differed, as in a test module.
pytest.register_assert_rewrite("tests.storage_contract")

ROOT = Path(__file__).resolve().parent.parent
# moto accepts any credentials; set them before any process (the worker) starts.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def own_queue(kind: str) -> str:
    """A Celery queue of one test's own, named after this test session so that the
    session's end removes what the broker keeps of it."""
    return f"pgclone-{kind}-{os.environ['PGCLONE_TEST_SESSION']}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session", autouse=True)
def _broker_cleaned() -> Iterator[None]:
    """After the session (and its workers): what the shared Redis broker holds for
    this session's queues (their bindings, messages never taken or never
    acknowledged). Other sessions' are left alone; without a reachable broker
    (the unit tier) there is nothing to remove."""
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests need PostgreSQL and Redis: stop at once, naming what is
    missing, when any is collected and they don't answer. The unit tests
    (``pytest tests/unit``) need no service at all."""
    if not any(item.get_closest_marker("integration") for item in items):
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


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


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


def worker_env(database: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="tests.settings",
        PGCLONE_TEST_DATABASE=database,
        **extra,
    )
    return env


class Worker:
    def __init__(self, name: str, process: subprocess.Popen, log: Path, storage: str) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.storage = storage  # where jobs the worker starts itself (beat) dump to

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(
    database: str,
    log: Path,
    *,
    moto: str,
    name: str | None = None,
    queue: str | None = None,
    pool: str = "prefork",
    prefix: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Worker:
    from tests.celery_app import app

    name = name or f"pgclone-test-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    storage = str(log.parent / "dumps")
    argv = [
        *prefix, sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
        "--hostname", name, "--queues", queue or os.environ["PGCLONE_TEST_QUEUE"],
        "--concurrency", "1", "--pool", pool, "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=worker_env(
                database, PGCLONE_TEST_S3_ENDPOINT=moto, PGCLONE_TEST_STORAGE=storage, **(env or {})
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: stop_worker ends all of it
        )
    worker = Worker(name, process, log, storage)

    # A Celery app of its own for the pings: fresh broker connections, whatever
    # happened to this process's (a test restarts Redis).
    pinger = Celery(broker=app.conf.broker_url, set_as_current=False)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"The Celery worker exited:\n{worker.output()}")
        return bool(pinger.control.ping(destination=[name], timeout=0.5))

    try:
        wait_for(ready, timeout=60, what="the Celery worker")
    finally:
        pinger.close()
    return worker


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def stop_worker(worker: Worker) -> None:
    """Stop a worker and whatever it started (its pool children, a wrapper's
    children), even when a test already killed its main process."""
    if worker.process.poll() is None:
        _signal_group(worker.process, signal.SIGTERM)
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _signal_group(worker.process, signal.SIGKILL)
            worker.process.wait()
    _signal_group(worker.process, signal.SIGKILL)


@pytest.fixture(scope="session")
def celery_worker(
    test_database_name: str, moto_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """One real worker process for the session, on this session's own queue."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = start_worker(test_database_name, log, moto=moto_server)
    yield worker
    stop_worker(worker)


def run_pgclone(
    *args: str,
    database: str,
    location: str,
    moto: str = "",
    timeout: float = 180,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``manage.py pgclone ARGS`` in a process of its own, as a user runs it."""
    extra = {"PGCLONE_TEST_STORAGE": location, "PGCLONE_TEST_S3_ENDPOINT": moto, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "django", "pgclone", *args],
        cwd=ROOT,
        env=worker_env(database, **extra),
        stdin=subprocess.DEVNULL,  # a script's: never a terminal, so never a prompt
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def pgclone_cli(test_database_name: str, moto_server: str) -> Callable[..., Any]:
    def run(*args: str, location: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return run_pgclone(
            *args, database=test_database_name, location=location, moto=moto_server, **kwargs
        )

    return run


# PostgreSQL helpers -------------------------------------------------------------


def psql(sql: str, database: str = "postgres") -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-AtX", "-v",
         "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    name = f"pgclone_scratch_{uuid.uuid4().hex[:10]}"
    psql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def restore_into(dump_bytes: bytes, database: str) -> None:
    """Decompress a pgclone dump and pg_restore it (the check users can do by hand)."""
    import zstandard

    raw = zstandard.ZstdDecompressor().decompressobj().decompress(dump_bytes)
    subprocess.run(
        ["pg_restore", "-h", "127.0.0.1", "-U", "postgres", "--no-owner", "--exit-on-error",
         "-d", database],
        input=raw, capture_output=True, check=True,
    )  # fmt: skip


def clone_database(source: str, name: str) -> None:
    """A copy made with the real tools (a template copy would need ``source`` idle)."""
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-Fc", "-d", source],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(
        ["pg_restore", "-h", "127.0.0.1", "-U", "postgres", "--no-owner", "-d", name],
        input=dump, capture_output=True, check=True,
    )  # fmt: skip


FINGERPRINT_TABLES = ("testapp_author", "testapp_book", "testapp_secret", "testapp_mark")


def fingerprint(database: str) -> dict[str, str]:
    """The contents of the sample tables, as a comparable value."""
    return {
        table: psql(
            "SELECT count(*) || ':' || "
            f"coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t",
            database,
        )
        for table in FINGERPRINT_TABLES
    }


def pgclone_databases() -> list[str]:
    """Temporary or old databases left by this session's jobs (other runs on the
    same server, a benchmark say, have their own).

    A restore drops the database it replaced just after reporting success:
    the ``pgclone_old_…`` databases of succeeded jobs get a few seconds to go.
    """
    from pgclone.models import Job

    deadline = time.monotonic() + 10
    while True:
        ours = {
            str(pk).replace("-", "")[:20]: status
            for pk, status in Job.objects.values_list("id", "status")
        }
        found = psql(
            "SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_database "
            "WHERE datname LIKE 'pgclone\\_tmp\\_%' OR datname LIKE 'pgclone\\_old\\_%'"
        ).split()
        names = [name for name in found if name.split("_")[2] in ours]
        dropping = [
            name
            for name in names
            if name.startswith("pgclone_old_") and ours[name.split("_")[2]] == Job.Status.SUCCEEDED
        ]
        if not dropping or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def copy_dump(
    location: str, key: str, database: str, timestamp: str, config: str = "default"
) -> str:
    """Store an existing local dump again under another name, as if made then."""
    import json

    from pgclone.storage import keys, storage_for

    source = keys.parse_key(key)
    new = keys.DumpKey(database, timestamp, config)
    root = Path(location)
    (root / database).mkdir(exist_ok=True)
    (root / str(new)).write_bytes((root / str(source)).read_bytes())
    manifest = storage_for(location).read_manifest(source)
    manifest.update(key=str(new), database=database, config=config)
    (root / f"{new}.json").write_text(json.dumps(manifest))
    return str(new)


def replace_dump_bytes(location: str, key: str, data: bytes) -> None:
    """Put ``data`` in place of a local dump, its manifest's size and SHA-256
    rewritten to match: a change only what is inside the dump can reveal."""
    import hashlib
    import json

    path = Path(location) / key
    path.write_bytes(data)
    manifest_path = Path(f"{path}.json")
    manifest = json.loads(manifest_path.read_text())
    manifest.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest_path.write_text(json.dumps(manifest))


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


# Restores in the integration tests -------------------------------------------------------

TARGET = os.environ.get("PGCLONE_TEST_TARGET", "")  # set by tests.settings


def drop_target_databases() -> None:
    from pgclone.pg import databases

    for name in (
        TARGET,
        databases.copy_name(TARGET, "previous"),
        databases.copy_name(TARGET, "current"),
    ):
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


def make_dump(name: str, location: str) -> str:
    """A real dump of the test database holding one author called ``name``."""
    from pgclone import api
    from pgclone.models import Job
    from tests.testapp.models import Author, Book, Secret

    Book.objects.all().delete()
    Author.objects.all().delete()
    author = Author.objects.create(name=name)
    Book.objects.create(author=author, title=f"{name}'s book")
    Secret.objects.create(value=name)
    job = api.dump(inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job.dump_key


def authors(database: str) -> list[str]:
    return psql("SELECT string_agg(name, ',' ORDER BY name) FROM testapp_author", database).split(
        ","
    )


# A Redis of a test's own -------------------------------------------------------------


class PrivateRedis:
    """A redis-server of one test's own on a free loopback port, keeping nothing on
    disk: the test may stop and restart it. The machine's Redis (6379), which other
    programs and the rest of the suite use, is never touched."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "redis.log"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for a worker or a ``manage.py`` process using this broker
        (tests.settings reads it), with a queue of its own there."""
        return {"PGCLONE_TEST_BROKER": self.url, "PGCLONE_TEST_QUEUE": f"pgclone-{self.port}"}

    def _answers(self) -> bool:
        """PING answered by this very server (not by whatever took the port)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            return bool(client.ping()) and client.info("server")["process_id"] == self.pid
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", str(self.folder),
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.process = process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"redis-server on port {self.port} exited:\n{self.log.read_text()}"
                )
            return self._answers()

        try:
            wait_for(ready, timeout=30, what=f"the private Redis on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop it (SIGTERM: a shutdown that saves nothing) and wait until it is gone."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop it and start it again on the same port: whatever it held is lost."""
        self.stop()
        self.start()


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


@contextlib.contextmanager
def _pinging_through(broker_url: str) -> Iterator[None]:
    """start_worker pings the new worker through this process's broker setting:
    point that at ``broker_url`` meanwhile. Nothing is sent through it from here,
    and connections this process already holds keep their broker."""
    from tests.celery_app import app

    saved = app.conf.broker_url
    app.conf.broker_url = broker_url
    try:
        yield
    finally:
        app.conf.broker_url = saved


@pytest.fixture
def private_redis_worker(
    private_redis: PrivateRedis, test_database_name: str, moto_server: str, tmp_path: Path
) -> Iterator[Worker]:
    """A worker (solo pool) whose broker is the test's private Redis. Jobs reach it
    from a ``manage.py pgclone`` process run with ``env=private_redis.env``."""
    with _pinging_through(private_redis.url):
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
