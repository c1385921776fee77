"""What ``manage.py pgclone`` prints: jobs, dumps and outcomes as lines of text.

Functions here take what the API returned and give back lines; the command
writes them. Sizes are in binary units (KiB, MiB) everywhere, as in the admin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from pgclone import health, humanize, payloads
from pgclone.models import Job
from pgclone.payloads import Manifest
from pgclone.storage.base import DumpInfo


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def jobs_table(jobs: Sequence[Job]) -> list[str]:
    rows = [("ID", "KIND", "STATUS", "DATABASE", "CREATED", "DURATION", "STEP")]
    for job in jobs:
        rows.append(
            (
                str(job.pk)[:8],
                job.kind,
                job.status,
                job.database_name or job.database_alias,
                timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                humanize.human_seconds(job.duration),
                job.current_step or "-",
            )
        )
    return table(rows)


def age(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """How long ago, in the largest unit that fits: 45s, 12m, 5h, 3d."""
    return humanize.human_age(((now or timezone.now()) - moment).total_seconds())


def flags(info: DumpInfo) -> str:
    """What a dump's manifest says about it beyond its bytes."""
    found = []
    if info.damaged:
        found.append("DAMAGED")
    manifest = Manifest.from_dict(info.manifest) if info.manifest else None
    if info.signed:  # its signature checked here: a field alone proves nothing
        found.append("signed")
    if manifest and manifest.excluded_tables:
        found.append("rows-excluded")
    if manifest and manifest.encrypted:
        found.append("encrypted")
    if manifest and payloads.counts_as_scrubbed(manifest):
        found.append("scrubbed")
    if manifest and manifest.subset:
        found.append("subset")
    return ",".join(found) or "-"


def trial_cell(info: DumpInfo, now: dt.datetime | None = None) -> str:
    """When the dump last proved it restores (``verify --restore``), or failed to:
    one word (``passed-3h-ago``), so that each column stays one field."""
    trial = health.trial_of(info)
    if trial is None:
        return "-"
    when = age(trial.at, now) if trial.at else "?"
    if trial.passed:
        return f"passed-{when}-ago" + ("" if trial.bound else "-unbound")
    return f"FAILED-{when}-ago"


def dumps_table(infos: Sequence[DumpInfo], now: dt.datetime | None = None) -> list[str]:
    """``ls --long``: one dump a line with its size, age, config, flags and last trial."""
    rows = [("KEY", "SIZE", "AGE", "CONFIG", "FLAGS", "TRIAL")]
    for info in infos:
        rows.append(
            (
                str(info.key),
                "?" if info.damaged else humanize.human_bytes(info.size),
                age(info.key.created, now),
                info.key.config,
                flags(info),
                trial_cell(info, now),
            )
        )
    return table(rows)


def damage_notes(infos: Sequence[DumpInfo]) -> list[str]:
    """Why ``ls --long`` flags a dump DAMAGED, or counts its trial record as no proof."""
    notes = []
    for info in infos:
        if info.damaged:
            notes.append(info.damaged)
        trial = info.trial or {}
        if "problem" in trial and "outcome" not in trial:
            notes.append(f"The trial record of dump {info.key} is damaged: {trial['problem']}.")
    return notes


def local_table(sources: Sequence[tuple[str, str]], sizes: dict[str, int | None]) -> list[str]:
    """``ls --local --long``: what ``restore :…`` can copy, with sizes; this
    project's own copies (:previous, :current) say so."""
    rows = [("TARGET", "DATABASE", "SIZE", "")]
    for target, name in sources:
        size = sizes.get(name)
        own = "this database's copy" if target in (":previous", ":current") else ""
        rows.append((target, name, "-" if size is None else humanize.human_bytes(size), own))
    return table(rows)


def kept_table(copies: Sequence[Any]) -> list[str]:
    """``ls --local --long``: pgclone's kept copies (``kept_copies.Found``), oldest first."""
    if not copies:
        return []
    rows = [("KEPT COPY", "SIZE", "KEPT", "DUMP")]
    for found in copies:
        mark = found.mark
        rows.append((found.name, humanize.human_bytes(found.size), mark.made, mark.key))
    return ["", *table(rows)]


def dump_key_line(job: Job) -> str:
    """A dump that did not succeed wrote no dump: its key names nothing in storage."""
    if not job.dump_key:
        return "-"
    if job.kind == Job.Kind.DUMP and job.status != Job.Status.SUCCEEDED:
        return f"{job.dump_key} (not written: the dump did not complete)"
    return job.dump_key


def cancelled_line(job: Job) -> str:
    if job.started_at is None:
        return f"Cancelled {job.kind} job {job.pk} before any worker started it: nothing to undo."
    return (
        f"Cancelled {job.kind} job {job.pk}. Its worker stops it within a few seconds "
        "(a running hook finishes first) and removes what it had created."
    )


def verified_outside(key: str, manifest: dict[str, Any]) -> str:
    """``verify`` of an encrypted dump that no identity here can decrypt."""
    recipients = ", ".join(Manifest.from_dict(manifest).recipients)
    return (
        f"{key}: its stored bytes are sound ({humanize.human_bytes(manifest['size'])}, "
        f"SHA-256 {manifest['sha256'][:16]}…), but it is encrypted (age, for {recipients}) "
        "and no identity here can decrypt it, so its archive could not be checked inside. "
        "Run verify where PGCLONE_ENCRYPTION_IDENTITIES or PGCLONE_AGE_IDENTITY holds one "
        "of those identities to check it fully."
    )


def identity_file(identity: str, recipient: str, now: dt.datetime) -> list[str]:
    """``keygen``'s standard output: an age identity file, as age-keygen writes one."""
    return [
        f"# created: {now.isoformat(timespec='seconds')}",
        f"# public key: {recipient}",
        identity,
    ]


def keygen_explanation(recipient: str) -> str:
    return (
        "The line starting with AGE-SECRET-KEY-1 is the identity: a secret that decrypts "
        "every dump made for its public key. Keep it only where restores run (the workers, "
        "or wherever `verify` checks inside dumps): save this output as a file readable by "
        "the workers' user alone (chmod 600) and list its path in "
        "PGCLONE_ENCRYPTION_IDENTITIES, or put the key itself in the environment variable "
        "PGCLONE_AGE_IDENTITY (a container secret, say). Never store it beside the dumps. "
        f"The recipient {recipient} is public: add it to PGCLONE_ENCRYPTION_RECIPIENTS on "
        "every machine that dumps, next to the recipients already there while older dumps "
        "need their keys."
    )


def scrub_check_lines(found: Sequence[Any]) -> list[str]:
    """``scrub-check``'s lines: per config, the undecided columns, then what is
    decided without a word of the config (emptied, kept by pgclone or by type)."""
    lines = []
    for checked in found:
        name, review = checked.config, checked.review
        lines += [f"{name}: undecided: {named}" for named in review.undecided]
        lines += [f"{name}: copied empty (holds credentials): {t}" for t in checked.emptied]
        lines += [f"{name}: kept (Django's, from the code): {t}" for t in review.kept_by_pgclone]
        by_table: dict[str, list[str]] = {}
        for named in review.kept_by_default:
            column = named.column
            by_table.setdefault(f"{column.schema}.{column.table}", []).append(column.name)
        lines += [
            f"{name}: kept by default (no text in their types): {table}: {', '.join(columns)}"
            for table, columns in by_table.items()
        ]
    return lines
