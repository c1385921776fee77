"""The dump workflow: pre_dump → dump → upload (declared at the end).

``dump`` streams the dump's container (pg_dump's schema archives, each
table's rows copied by parallel sessions in one snapshot) through zstd into
storage, staged where nobody sees it; ``upload`` publishes it (writes its
manifest, the commit marker) and applies the retention rules.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib.metadata
import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.utils import timezone

from pgclone import conf, configs, hooks, payloads, retention
from pgclone.archive import container_writer, containers, streams
from pgclone.engine import jobs, runner, workflow
from pgclone.exceptions import JobCancelled, PgCloneError, StorageError
from pgclone.humanize import human_bytes
from pgclone.models import Job
from pgclone.pg import accounts, postgres, privileges, programs, table_counts
from pgclone.sharing import planned_dump, sections, subset
from pgclone.steps import leaving_out, routing
from pgclone.storage import Storage, keys, signing, storage_for

logger = logging.getLogger("pgclone")


def pre_dump(job: Job) -> None:
    """Run the pre-dump hooks, in order, on the database about to be dumped."""
    hook_list = list(payloads.dump_options(job).pre_dump_hooks)
    if not hook_list:
        jobs.set_step_message(job, "pre_dump", "No hooks configured.")
        return
    with _routed_to(job.database_alias):
        message = hooks.run(hook_list)
    jobs.set_step_message(job, "pre_dump", message)


def dump(job: Job) -> None:
    """Stream the dump's container through zstd into storage, staged (not visible yet)."""
    asked = payloads.dump_options(job)
    storage = storage_for(asked.storage_location)
    if job.result.get("staged"):  # a redelivered step: start again from scratch
        storage.abort(job.result["staged"])
        jobs.update_result(job, staged=None)
    prepared = _prepare(job, asked)
    jobs.record_dump_target(job, str(prepared.key), prepared.conn.name)
    written = _write(job, asked, storage, prepared)
    _record(job, asked, prepared, written)


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """What a dump will write, decided before anything is: refused here when it can't."""

    conn: postgres.ConnInfo
    key: keys.DumpKey
    left_out: list[str]  # Django's names of the tables whose rows are left out
    excluded: list[tuple[str, str]]  # those and the tables referencing them, qualified
    cascaded: list[str]  # what the message says was left out with them
    sharing: sections.Sharing  # the config's scrub and subset, as this worker defines it
    plan: subset.Plan | None  # a planned dump's (a plain dump's is read in its snapshot)
    server_version: str
    estimate: int
    users: accounts.SignIn | None  # the user table and who could sign in; None without one
    warning: str | None  # privileges.superuser_dump_warning's

    @property
    def planned_users(self) -> subset.PlannedTable | None:
        """The user table, when the plan writes its rows (scrubbed, a subset of them)."""
        if self.users is None or self.plan is None:
            return None
        users = (self.users.schema, self.users.table)
        planned = planned_dump.planned_tables(self.plan)
        return next((table for table in planned if (table.schema, table.name) == users), None)


@dataclasses.dataclass(frozen=True)
class _Written:
    stats: dict[str, Any]  # streams.compress's: sizes, digests, compression
    tables: list[table_counts.TableCount]
    rows: dict[tuple[str, str], int]  # the rows of the tables a plan wrote
    proof: dict[str, Any] | None = None  # the leak proof's sample, result and time
    accounts: dict[str, Any] | None = None  # the manifest's: who could sign in to the admin
    pre_data_sha256: str | None = None  # the container's pre-data archive's


@dataclasses.dataclass
class _Archive:
    """What the dump stores, and the rows of the tables pgclone wrote itself
    (complete once ``stream`` is read to its end)."""

    stream: Any
    rows: dict[tuple[str, str], int]
    source: Any = None  # the container: a scrubbed dump's leak proof, once read
    # The accounts among the user table's rows the plan wrote, once the block is left.
    accounts: accounts.Counted | None = None


def _prepare(job: Job, asked: payloads.DumpOptions) -> _Prepared:
    conn = postgres.conn_info(job.database_alias).for_job(job.pk)
    # This worker's config: its scrub and subset apply (none when it is not defined here).
    config_name = asked.config or job.config_name
    sharing = configs.retention_of(config_name).sharing
    # One session for the catalog reads before the dump: a session costs the
    # server a process, and an empty database's dump is little more than these.
    with postgres.connect(conn) as connection:
        out = leaving_out.left_out(conn, asked.exclude_models, sharing, connection)
        plan = None
        if sharing.planned:  # refused here, before anything is written
            plan = planned_dump.make_plan(
                conn, sharing, out.tables, out.path, config=config_name, connection=connection
            )
        programs.require_program("psql")  # its sessions copy the big tables
        return _prepared(job, conn, out, sharing, plan, connection)


def _prepared(
    job: Job,
    conn: postgres.ConnInfo,
    out: leaving_out.LeftOut,
    sharing: sections.Sharing,
    plan: subset.Plan | None,
    connection: Any,
) -> _Prepared:
    referencing = out.referencing
    return _Prepared(
        conn=conn,
        key=keys.make_key(conn.name, job.config_name, timezone.now()),
        left_out=[*out.names, *(postgres.display_name(*table) for table in referencing)],
        excluded=out.tables,
        cascaded=[*out.cascaded, *(postgres.display_name(*table) for table in referencing)],
        sharing=sharing,
        plan=plan,
        server_version=postgres.server_version(conn, connection),
        estimate=postgres.table_bytes(conn, connection),
        users=_users(connection, out.path),
        warning=privileges.superuser_dump_warning(conn, connection),
    )


def _users(connection: Any, path: list[str]) -> accounts.SignIn | None:
    users = accounts.user_model()
    if users is None:  # no django.contrib.auth: nobody signs in to an admin
        return None
    with connection.cursor() as cursor:
        return accounts.locate(cursor, users, path)


def _write(
    job: Job, asked: payloads.DumpOptions, storage: Storage, prepared: _Prepared
) -> _Written:
    """The dump, compressed into storage and staged; its tables counted in its snapshot."""
    storage.check()
    conn, estimate = prepared.conn, prepared.estimate
    upload = storage.start_upload(prepared.key, str(job.pk), expected_size=estimate)
    jobs.update_result(job, staged=upload.handle)  # so a cleanup can find it, even after a crash
    progress = runner.Progress(job.pk, total=estimate)
    try:
        # pg_dump reads the snapshot's data; its tables are counted there meanwhile.
        with (
            table_counts.Snapshot(conn) as snapshot,
            concurrent.futures.ThreadPoolExecutor(1, "pgclone-count") as counter,
        ):
            counting = counter.submit(snapshot.count_tables, prepared.excluded)
            accounting = None
            if _counted_in_snapshot(prepared):
                accounting = counter.submit(snapshot.count_accounts, prepared.users)
            try:
                with _archive(conn, snapshot.id, prepared, job.config_name) as archive:
                    stats = streams.compress(
                        archive.stream,
                        upload,
                        level=conf.zstd_level(),
                        on_progress=progress.add,
                        recipients=asked.encryption_recipients,
                        threads=conf.dump_jobs(),
                    )
            except BaseException:
                snapshot.cancel()  # the count too: nobody waits for it
                raise
            tables = _with_rows_written(counting.result(), archive.rows)
            found = accounting.result() if accounting is not None else archive.accounts
        handle = upload.close()
    except BaseException as exc:
        not_discarded = _abort(job, upload)
        if not_discarded and isinstance(exc, PgCloneError) and not isinstance(exc, JobCancelled):
            jobs.update_result(job, discard_failed=True)  # the cleanup need not try again
            raise StorageError(f"{exc}\n{not_discarded}") from exc
        raise
    jobs.update_result(job, staged=handle)  # from here on, cleanup can discard it
    progress.flush()
    proof = getattr(archive.source, "proof", None)
    pre_data = getattr(archive.source, "pre_data_sha256", None)
    return _Written(stats, tables, dict(archive.rows), proof, _accounts(prepared, found), pre_data)


def _counted_in_snapshot(prepared: _Prepared) -> bool:
    """Whether the dump's accounts are counted in its snapshot: when pg_dump
    writes the user table's rows as they are (the rows a plan wrote are counted
    once written, and rows left out are none)."""
    users = prepared.users
    if users is None or prepared.planned_users is not None:
        return False
    return (users.schema, users.table) not in prepared.excluded


def _accounts(prepared: _Prepared, found: accounts.Counted | None) -> dict[str, Any] | None:
    """The manifest's ``accounts``: None without a user model."""
    users = prepared.users
    if users is None:
        return None
    if (users.schema, users.table) in prepared.excluded:
        found = accounts.NONE  # its rows are left out of the dump
    return users.record(found)


def _record(job: Job, asked: payloads.DumpOptions, prepared: _Prepared, written: _Written) -> None:
    """What the manifest will say of the dump, and the step's message."""
    plan, stats = prepared.plan, written.stats
    jobs.update_result(
        job,
        key=str(prepared.key),
        server_version=prepared.server_version,
        pg_dump_version=programs.tool_version("pg_dump"),
        excluded_tables=prepared.left_out,
        tables=[table.to_dict() for table in written.tables],
        accounts=written.accounts,
        pre_data_sha256=written.pre_data_sha256,
        **stats,
    )
    jobs.update_result(job, format=containers.FORMAT)
    if plan is not None:
        described = planned_dump.describe(prepared.sharing, plan)
        described["plan"]["rows"] = {
            postgres.display_name(*table): rows for table, rows in written.rows.items()
        }
        jobs.update_result(job, **described)
    if written.proof is not None:
        jobs.update_result(job, leak_proof=written.proof)
    message = (
        f"{human_bytes(stats['raw_size'])} dumped, "
        f"{human_bytes(stats['size'])} after {stats['compression']}"
    )
    if plan is not None:
        done = " and ".join(prepared.sharing.what_it_does())
        message += f", {done} ({len(written.rows)} tables written by pgclone's plan)"
    if written.proof is not None:
        proof = written.proof
        message += (
            f", no leak found ({proof['sample']} original values of {proof['columns']} "
            f"scrubbed columns searched; the proof took {proof['seconds']:.2f} s)"
        )
    if asked.encryption_recipients:
        count = len(asked.encryption_recipients)
        message += f", encrypted with age for {count} recipient{'s' * (count != 1)}"
    if prepared.cascaded:
        message += (
            f". Also left out the rows of {', '.join(prepared.cascaded)}, which reference "
            "rows left out (pg_restore could not re-create their foreign keys otherwise)"
        )
    if prepared.warning:
        message += f". Warning: {prepared.warning}"
    jobs.set_step_message(job, "dump", message)


@contextlib.contextmanager
def _archive(
    conn: postgres.ConnInfo, snapshot: str, prepared: _Prepared, config_name: str
) -> Iterator[_Archive]:
    """What the dump stores, to be read to its end inside the block: its container."""
    excluded = prepared.excluded
    with planned_dump.checked(conn, snapshot, prepared.plan, excluded) as (cursor, plan):
        with (
            planned_dump.pg_dumps(  # they read the catalog while the kept rows are found
                conn, snapshot=snapshot, plan=plan, exclude_table_data=excluded
            ) as started,
            container_writer.container(
                conn, snapshot=snapshot, cursor=cursor, plan=plan, config_name=config_name,
                started=started,
            ) as source,
        ):  # fmt: skip
            archive = _Archive(source, source.rows, source)
            yield archive
        planned = prepared.planned_users
        if planned is not None:  # its rows as written: in the snapshot, with the kept rows
            archive.accounts = accounts.count_rows(cursor, prepared.users, planned.select)


def _with_rows_written(
    tables: list[table_counts.TableCount], written: dict[tuple[str, str], int]
) -> list[table_counts.TableCount]:
    """The tables pgclone copied hold the rows their COPY wrote (a planned
    table's, not the table's), counted exactly."""
    return [
        dataclasses.replace(table, rows=written[key], exact=True)
        if (key := (table.schema, table.name)) in written
        else table
        for table in tables
    ]


def _abort(job: Job, upload: Any) -> str | None:
    """Throw away a dump cut short. If that fails too (S3 unreachable), the
    failure is logged and the staged handle stays recorded for the sweep; the
    sentence returned says so."""
    try:
        upload.abort()
    except Exception as exc:
        logger.warning("pgclone job %s: could not discard the partial dump: %s", job.pk, exc)
        return _not_discarded(exc)
    return None


def _not_discarded(exc: Exception) -> str:
    cause = runner.describe_error(exc).rstrip().removesuffix(".")
    return (
        f"The partial dump could not be discarded yet: {cause}. The next sweep "
        "(`manage.py pgclone sweep`, or the pgclone.sweep task) will discard it."
    )


def upload(job: Job) -> None:
    """Finalise: the dump appears under its key, with its manifest, only now."""
    handle = job.result.get("staged")
    if not handle:
        raise PgCloneError("The dump step recorded no staged dump to finalise.")
    asked = payloads.dump_options(job)
    storage = storage_for(asked.storage_location)
    result = job.result
    manifest = payloads.Manifest(
        key=result["key"],
        database=job.database_name,
        config=job.config_name,
        created=keys.parse_key(result["key"]).created.isoformat(),
        compression=result["compression"],
        size=result["size"],
        raw_size=result["raw_size"],
        sha256=result["sha256"],
        encryption=result.get("encryption"),
        plaintext_sha256=result.get("plaintext_sha256"),
        server_version=result["server_version"],
        pg_dump_version=result["pg_dump_version"],
        pgclone_version=_version(),
        exclude_models=asked.exclude_models,
        excluded_tables=tuple(result["excluded_tables"]),
        tables=result.get("tables"),
        job_id=str(job.pk),
        format=result.get("format") or payloads.Manifest.format,
        scrubbed=bool(result.get("scrubbed")),
        subset=bool(result.get("subset")),
        plan=result.get("plan"),
        leak_proof=_manifest_proof(result.get("leak_proof")),
        accounts=result.get("accounts"),
        pre_data_sha256=result.get("pre_data_sha256"),
    ).to_dict()
    manifest = signing.sign(manifest)  # with PGCLONE_SIGNING_KEY: covers sha256 and sizes
    storage.complete(handle, manifest)
    jobs.update_result(job, staged=None, manifest=manifest)
    message = f"{result['key']} ({human_bytes(result['size'])})"
    jobs.set_step_message(job, "upload", message + _apply_retention(storage, job))


def _manifest_proof(proof: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the manifest says of the leak proof: its sample and result (the job, its times)."""
    if proof is None:
        return None
    return {key: proof[key] for key in ("sample", "columns", "result")}


def _apply_retention(storage: Storage, job: Job) -> str:
    """Prune this database's dumps of this config. A failure here is only a warning:
    the new dump is safe either way."""
    try:
        pruning = retention.prune(storage, database=job.database_name, config=job.config_name)
    except Exception as exc:
        return f"; warning: retention failed: {runner.describe_error(exc)}"
    said = ""
    if pruning.left_alone:
        said = (
            f"; warning: {len(pruning.left_alone)} dump(s) that can't be used were neither "
            "counted nor deleted by retention (`manage.py pgclone prune --dry-run` lists them)"
        )
    if not pruning.deleted:
        return said
    jobs.update_result(job, pruned=[str(key) for key in pruning.deleted])
    return f"; retention deleted {len(pruning.deleted)} older dump(s)" + said


def cleanup(job: Job) -> list[str]:
    """After a failure: end pg_dump's session, and throw away a staged dump so
    nothing half-written remains. Returns what was removed."""
    postgres.end_sessions(postgres.conn_info(job.database_alias).for_job(job.pk))
    handle = job.result.get("staged")
    # discard_failed: the dump step just tried, and its error says the sweep will.
    if not handle or job.result.get("discard_failed"):
        return []
    try:
        storage_for(payloads.dump_options(job).storage_location).abort(handle)
    except Exception as exc:
        raise StorageError(_not_discarded(exc)) from exc
    jobs.update_result(job, staged=None)
    return ["the partial dump"]


def discard_leftover_uploads() -> int:
    """Discard the staged dumps that ended (failed, cancelled) dump jobs still
    record: their own cleanup could not (S3 was unreachable, say). Returns how
    many were discarded. Never raises: a failure is logged and the handle stays
    recorded, for the next sweep to try again."""
    try:
        leftovers = list(
            Job.objects.filter(
                kind=Job.Kind.DUMP,
                status__in=(Job.Status.FAILED, Job.Status.CANCELLED),
                result__has_key="staged",
            ).exclude(result__staged=None)
        )
    except Exception as exc:
        logger.warning("pgclone: could not look for partial dumps left behind: %s", exc)
        return 0
    return sum(_discard_leftover(job) for job in leftovers)


def _discard_leftover(job: Job) -> bool:
    try:
        storage_for(payloads.dump_options(job).storage_location).abort(job.result["staged"])
        job.result.pop("discard_failed", None)
        jobs.update_result(job, staged=None)
    except Exception as exc:
        logger.warning(
            "pgclone: could not discard the partial dump of job %s yet (the next sweep "
            "tries again): %s",
            job.pk,
            exc,
        )
        return False
    logger.info("pgclone: discarded the partial dump left by job %s", job.pk)
    return True


def _routed_to(alias: str) -> contextlib.AbstractContextManager:
    """Route ``default`` to another alias's database so hooks act on the dumped one."""
    target, default = settings.DATABASES[alias], settings.DATABASES["default"]
    where = ("HOST", "PORT", "NAME", "USER")
    if [target.get(k) for k in where] == [default.get(k) for k in where]:
        return contextlib.nullcontext()  # the same database under another alias
    return routing.routed(target)


def _version() -> str:
    try:
        return importlib.metadata.version("pgclone")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


WORKFLOW = workflow.Workflow(
    kind=Job.Kind.DUMP,
    steps=(
        workflow.Step("pre_dump", pre_dump),
        workflow.Step("dump", dump),
        workflow.Step("upload", upload),
    ),
    cleanup=cleanup,
)
