"""The admin: jobs with live progress, the dumps in storage, dump and restore.

Dumping needs the ``pgclone.dump_database`` permission and restoring
``pgclone.restore_database`` (being staff is not enough), plus a confirmation
on which the user types the name of the database to overwrite. Every action
calls the same ``pgclone.api`` as the management command.
"""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from pgclone import api, conf, health, humanize, payloads
from pgclone.exceptions import PgCloneError
from pgclone.models import Job
from pgclone.pg import databases, postgres
from pgclone.storage import get_storage, keys, signing
from pgclone.storage.base import DumpInfo

logger = logging.getLogger("pgclone")


def _postgres_aliases() -> list[tuple[str, str]]:
    return [
        (alias, f"{alias} ({config.get('NAME')})")
        for alias, config in settings.DATABASES.items()
        if config.get("ENGINE") in postgres.POSTGRES_ENGINES
    ]


def _copies(alias: str) -> tuple[list[str], list[str]]:
    """What the admin offers to restore into ``alias`` from the server itself: the
    copies an undo goes back to (``:previous``, ``:current``, when they exist), and
    other databases (``:NAME``) only when PGCLONE_LOCAL_SOURCES lists them."""
    undo = {f":{which}" for which in databases.COPY_SUFFIXES}
    targets = [target for target, _ in api.local_sources(alias)]
    others = [target for target in targets if target not in undo]
    return (
        [target for target in targets if target in undo],
        others if conf.local_sources() is not None else [],
    )


def offered_problem(key: str, alias: str) -> str:
    """Why the restore form can't take ``key`` for the ``alias`` database ("" when it
    can): it takes only what it offers, never any database on the server."""
    if key.startswith(":"):
        undo, others = _copies(alias)
        if key in undo or key in others:
            return ""
        if key[1:] in databases.COPY_SUFFIXES:
            return f"There is no {key} copy of {alias!r} to go back to."
        return (
            f"{key!r} is not offered here: the admin copies only the databases listed in "
            "PGCLONE_LOCAL_SOURCES that exist on the server."
        )
    try:
        parsed = keys.parse_key(key)
        signing.check(parsed, get_storage().read_manifest(parsed))
    except PgCloneError as exc:
        return str(exc)
    return ""


def _config_choices(configs: Any) -> list[tuple[str, str]]:
    names = configs if isinstance(configs, dict) else {}  # a malformed setting: check E003
    return [(name, name) for name in sorted({"default", *names})]


class DumpNowForm(forms.Form):
    config = forms.ChoiceField()
    database = forms.ChoiceField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["config"].choices = _config_choices(conf.dump_configs())
        self.fields["database"].choices = _postgres_aliases()


class RestoreForm(forms.Form):
    key = forms.CharField(widget=forms.HiddenInput)
    database = forms.ChoiceField(label="Restore into")
    config = forms.ChoiceField(label="Restore config")
    reversible = forms.BooleanField(
        required=False, help_text="Keep :previous and :current copies to go back to."
    )
    confirm = forms.CharField(
        label="Type the name of the database to overwrite",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["database"].choices = _postgres_aliases()
        self.fields["config"].choices = _config_choices(conf.restore_configs())

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        alias = data.get("database")
        if alias:
            name = postgres.conn_info(alias).name
            if data.get("confirm", "").strip() != name:
                self.add_error("confirm", f"Type {name} exactly to confirm the restore.")
            problem = offered_problem(data.get("key", ""), alias) if data.get("key") else ""
            if problem:
                self.add_error("key", problem)
        return data


def _job_links(found: list[Job], prefix: str) -> str:
    links = format_html_join(
        ", ",
        '<a href="{}">{}</a>',
        ((reverse("admin:pgclone_job_change", args=[job.pk]), str(job.pk)[:8]) for job in found),
    )
    return format_html("{}{}", prefix, links)


def _copies_offered() -> list[tuple[str, str, str]]:
    """(alias, target, label) of the copies on the server the dumps page offers to
    restore: undos always, other databases only those of PGCLONE_LOCAL_SOURCES."""
    found = []
    for alias, _ in _postgres_aliases():
        try:
            undo, sources = _copies(alias)
        except PgCloneError as exc:  # a server that can't be reached offers nothing
            logger.warning("pgclone admin: can't list the copies of %r: %s", alias, exc)
            continue
        found += [(alias, target, f"Undo: restore {target}") for target in undo]
        found += [(alias, target, f"Copy {target}") for target in sources]
    return found


def _progress(job: Job) -> str:
    if not job.progress_done:
        return ""
    text = humanize.human_bytes(job.progress_done)
    if job.progress_label:
        text = f"{job.progress_label} {text}"
    if job.progress_total:
        text += f", {min(99, int(100 * job.progress_done / job.progress_total))}%"
    return text


def _data_text(info: DumpInfo) -> str:
    """What was done to a dump's data, as the dumps page says it."""
    manifest = info.manifest or {}
    done = [
        word
        for word, on in (
            ("scrubbed", payloads.counts_as_scrubbed(manifest)),
            ("subset", manifest.get("subset") is True),
        )
        if on
    ]
    return ", ".join(done) or "-"


def _trial_text(trial: health.Trial | None) -> str:
    if trial is None:
        return "never"
    when = timezone.localtime(trial.at).strftime("%Y-%m-%d %H:%M") if trial.at else "?"
    if trial.passed:
        return f"passed {when}" + ("" if trial.bound else f" (unbound: {health.UNBOUND})")
    return f"FAILED {when}: {trial.problem}"


# Who may stop a job: whoever may start one of its kind.
START_PERMISSION = {
    Job.Kind.DUMP: "dump_database",
    Job.Kind.RESTORE: "restore_database",
    Job.Kind.VERIFY: "restore_database",  # a trial restore runs the dump's code too
}


def job_status(job: Job) -> dict[str, Any]:
    """What the job page shows, as JSON for its live updates."""
    return {
        "id": str(job.pk),
        "status": job.status,
        "finished": job.is_finished,
        "current_step": job.current_step,
        "progress": _progress(job),
        "duration": humanize.human_seconds(job.duration),
        "error": job.error,
        "steps": [
            {
                "name": step.name,
                "status": step.status,
                "duration": humanize.human_seconds(step.duration),
                "worker": step.worker_hostname,
                "message": step.message,
            }
            for step in job.steps.all()
        ],
    }


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    # Few, narrow columns: the list fits a 1280 px window beside the admin's sidebars.
    list_display = ("short_id", "what", "database_name", "created", "took")
    list_filter = ("kind", "status", "database_name")
    search_fields = ("id", "dump_key", "database_name", "requested_by")
    # Status, progress and error are shown (and kept up to date) by the Progress box.
    fields = readonly_fields = (
        "id", "kind", "database_alias", "database_name", "dump_key", "related", "config_name",
        "requested_by", "created_at", "started_at", "finished_at", "worker_hostname",
        "heartbeat_at", "task_id", "options", "result",
    )  # fmt: skip
    change_form_template = "admin/pgclone/job/change_form.html"
    change_list_template = "admin/pgclone/job/change_list.html"

    @admin.display(description="id")
    def short_id(self, job: Job) -> str:
        return str(job.pk)[:8]

    @admin.display(description="job", ordering="status")
    def what(self, job: Job) -> str:
        """Kind and status, and the step a running job is in."""
        step = f" ({job.current_step})" if job.current_step and not job.is_finished else ""
        return f"{job.kind} {job.status}{step}"

    @admin.display(description="created", ordering="created_at")
    def created(self, job: Job) -> str:
        return timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="duration")
    def took(self, job: Job) -> str:
        return humanize.human_seconds(job.duration)

    @admin.display(description="related jobs")
    def related(self, job: Job) -> str:
        """The dump a restore restored; the restores made from a dump."""
        if not job.dump_key:
            return "-"
        if job.kind != Job.Kind.DUMP:
            made = Job.objects.filter(kind=Job.Kind.DUMP, dump_key=job.dump_key).first()
            return _job_links([made], "made by the dump job ") if made else "-"
        restores = Job.objects.filter(kind=Job.Kind.RESTORE, dump_key=job.dump_key)
        trials = Job.objects.filter(kind=Job.Kind.VERIFY, dump_key=job.dump_key)
        links = [
            _job_links(list(found), prefix)
            for found, prefix in ((restores, "restored by "), (trials, "trial restores "))
            if found
        ]
        return format_html_join(mark_safe("<br>"), "{}", ((link,) for link in links)) or "-"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("dumps/", wrap(self.dumps_view), name="pgclone_dumps"),
            path("dumps/restore/", wrap(self.restore_view), name="pgclone_restore"),
            path("<uuid:job_id>/status/", wrap(self.status_view), name="pgclone_job_status"),
            path("<uuid:job_id>/cancel/", wrap(self.cancel_view), name="pgclone_job_cancel"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any):
        extra = kwargs.pop("extra_context", None) or {}
        job = self.get_object(request, object_id)
        if job is not None:
            extra["job_status"] = job_status(job)
            extra["status_url"] = reverse("admin:pgclone_job_status", args=[job.pk])
            may_start = request.user.has_perm(f"pgclone.{START_PERMISSION[job.kind]}")
            if may_start and not job.is_finished:
                extra["cancel_url"] = reverse("admin:pgclone_job_cancel", args=[job.pk])
            extra["undo_url"] = self._undo_url(request, job)
        return super().change_view(request, object_id, *args, extra_context=extra, **kwargs)

    def _require(self, request: HttpRequest, permission: str) -> None:
        if not request.user.has_perm(f"pgclone.{permission}"):
            raise PermissionDenied

    def _start_job(
        self, request: HttpRequest, start: Any, *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        """Start a job for this user; its page, or None (with the error shown) if refused."""
        try:
            job = start(*args, requested_by=f"{request.user.get_username()} (admin)", **kwargs)
        except PgCloneError as exc:
            messages.error(request, str(exc))
            return None
        messages.success(request, f"{job.kind.capitalize()} job {job.pk} started.")
        return redirect("admin:pgclone_job_change", job.pk)

    def _undo_url(self, request: HttpRequest, job: Job) -> str:
        """The restore form for ``:previous``, when this restore left one to go back to."""
        reversible = job.kind == Job.Kind.RESTORE and payloads.restore_options(job).reversible
        if not (job.kind == Job.Kind.RESTORE and job.status == Job.Status.SUCCEEDED and reversible):
            return ""
        if not (request.user.has_perm("pgclone.restore_database") and conf.allow_restore()):
            return ""
        try:
            undo, _ = _copies(job.database_alias)
        except PgCloneError:
            return ""
        if ":previous" not in undo:
            return ""
        query = f"?key=%3Aprevious&database={job.database_alias}"
        return reverse("admin:pgclone_restore") + query

    def cancel_view(self, request: HttpRequest, job_id: Any) -> HttpResponse:
        job = api.job(job_id)
        self._require(request, START_PERMISSION[job.kind])
        if request.method != "POST":
            return redirect("admin:pgclone_job_change", job.pk)
        try:
            api.cancel(job.pk, requested_by=f"{request.user.get_username()} (admin)")
        except PgCloneError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{job.kind.capitalize()} job {job.pk} cancelled.")
        return redirect("admin:pgclone_job_change", job.pk)

    def status_view(self, request: HttpRequest, job_id: Any) -> JsonResponse:
        self._require(request, "view_job")
        return JsonResponse(job_status(api.job(job_id)))

    def dumps_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, "view_job")
        can_dump = request.user.has_perm("pgclone.dump_database")
        form = DumpNowForm(request.POST or None, initial={"config": "default"})
        if request.method == "POST":
            self._require(request, "dump_database")
            if form.is_valid():
                started = self._start_job(
                    request,
                    api.dump,
                    config=form.cleaned_data["config"],
                    database=form.cleaned_data["database"],
                )
                if started:
                    return started
        groups: dict[str, list] = {}
        can_restore = request.user.has_perm("pgclone.restore_database") and conf.allow_restore()
        storage_error, location, healths = "", conf.storage_location(), []
        now = timezone.now()
        try:
            storage = get_storage()
            location = storage.location  # resolved: the folder's full path
            infos = storage.infos()
            for info in reversed(infos):
                trial = health.trial_of(info)
                groups.setdefault(info.key.database, []).append(
                    (info, trial, _trial_text(trial), _data_text(info))
                )
            healths = [(h.healthy, h.line(now)) for h in health.assess(infos, now=now)]
        except PgCloneError as exc:
            storage_error = str(exc)
        context = {
            **self.admin_site.each_context(request),
            "title": "Dumps in storage",
            "opts": self.model._meta,
            "groups": sorted(groups.items()),
            "storage_error": storage_error,
            "location": location,
            "healths": healths,
            "max_age": health.DEFAULT_MAX_AGE,
            "form": form if can_dump else None,
            "can_restore": can_restore,
            "copies": _copies_offered() if can_restore else [],
        }
        return TemplateResponse(request, "admin/pgclone/dumps.html", context)

    def restore_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, "restore_database")
        key = request.POST.get("key") or request.GET.get("key", "")
        database = request.GET.get("database", "default")
        initial = {"key": key, "database": database, "config": "default"}
        form = RestoreForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            started = self._start_job(
                request,
                api.restore,
                data["key"],
                database=data["database"],
                config=data["config"],
                reversible=data["reversible"],
            )
            if started:
                return started
        context = {
            **self.admin_site.each_context(request),
            "title": "Restore a dump",
            "opts": self.model._meta,
            "form": form,
            "key": key,
            "allowed": conf.allow_restore(),
        }
        return TemplateResponse(request, "admin/pgclone/restore.html", context)
