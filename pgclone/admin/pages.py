"""What the dumps page shows, and the links the admin's pages share."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from pgclone import conf, health
from pgclone.admin import offers
from pgclone.admin.forms import failed_restores, trial_text
from pgclone.exceptions import PgCloneError
from pgclone.models import Job
from pgclone.storage import get_storage
from pgclone.storage.base import DumpInfo

_JOB_ID = re.compile(r"\(job ([0-9a-f]{8})\)")


def job_url(job: Job) -> str:
    return reverse("admin:pgclone_job_change", args=[job.pk])


def job_links(found: list[Job], prefix: str) -> str:
    links = format_html_join(
        ", ", '<a href="{}">{}</a>', ((job_url(job), str(job.pk)[:8]) for job in found)
    )
    return format_html("{}{}", prefix, links)


def restore_url(key: str, alias: str | None = None) -> str:
    """The restore form for ``key`` (into ``alias``), quoted as the template's urlencode."""
    url = f"{reverse('admin:pgclone_restore')}?key={quote(key, safe='/')}"
    return url + (f"&database={quote(alias, safe='/')}" if alias else "")


def still_active(job: Job) -> SafeString:
    """What the bulk delete says of an active job it refuses to delete."""
    return format_html(
        '<a href="{}">{} job {}</a> is {}: a job can be deleted once it has ended '
        "(cancel it, or wait for it).",
        job_url(job), job.get_kind_display(), str(job.pk)[:8], job.status,
    )  # fmt: skip


def linked(line: str) -> SafeString:
    """A health line whose "(job 1234abcd)" are links to those jobs' pages."""

    def link(match: re.Match) -> str:
        job = Job.objects.with_id_prefix(match.group(1)).first()
        if job is None:
            return match.group(0)
        return f'(<a href="{job_url(job)}">job {match.group(1)}</a>)'

    return mark_safe(_JOB_ID.sub(link, str(escape(line))))  # noqa: S308 - escaped first


def _health_lines(infos: list[DumpInfo]) -> list[tuple[str, SafeString]]:
    """(css class, line) of each database's health; a real restore of its newest
    dump that failed is told there too (health counts only trial restores)."""
    now = timezone.now()
    lines = []
    for verdict in health.assess(infos, now=now):
        css, line = ("success" if verdict.healthy else "error"), linked(verdict.line(now))
        failed = failed_restores(str(verdict.newest.key)) if verdict.newest else ""
        if failed:
            css = "warning" if verdict.healthy else css
            line = format_html("{}; a restore of its newest dump failed: {}", line, failed)
        lines.append((css, line))
    return lines


def _row(info: DumpInfo, restorable: set[str], kept: list[offers.KeptCopy]) -> dict[str, Any]:
    trial = health.trial_of(info)
    return {
        "info": info,
        "kept": kept,
        "trial": trial,
        "trial_text": trial_text(trial),
        "data": ", ".join(offers.data_flags(info)) or "-",
        "failed": failed_restores(str(info.key)),
        "refused": offers.unrequired(info),
        "restore_url": restore_url(str(info.key)) if str(info.key) in restorable else "",
    }


def dumps_context(can_restore: bool) -> dict[str, Any]:
    """The dumps page: where the storage is, each database's health and dumps,
    and the dumps' kept copies on the servers."""
    groups: dict[str, list] = {}
    storage_error, location, healths = "", conf.storage_location(), []
    kept = offers.kept_copies_on_servers()
    try:
        storage = get_storage()
        location = storage.location  # resolved: the folder's full path
        infos = storage.infos()
        restorable = {str(info.key) for info in offers.restorable_dumps(infos)}
        for info in reversed(infos):
            copies = [copy for copy in kept if copy.of(location) and copy.key == str(info.key)]
            groups.setdefault(info.key.database, []).append(_row(info, restorable, copies))
        healths = _health_lines(infos)
    except PgCloneError as exc:
        storage_error = str(exc)
    copies = offers.copies_offered() if can_restore else []
    return {
        "groups": sorted(groups.items()),
        "storage_error": storage_error,
        "location": location,
        "healths": healths,
        "max_age": health.DEFAULT_MAX_AGE,
        "can_restore": can_restore,
        "copies": [(copy, restore_url(copy.target, copy.alias)) for copy in copies],
        "kept": [(copy, copy.of(location)) for copy in reversed(kept)],
    }
