"""The admin: jobs with live progress, the dumps in storage, dump and restore.

Dumping needs the ``pgclone.dump_database`` permission and restoring
``pgclone.restore_database`` (being staff is not enough), plus a confirmation
on which the user types the name of the database to overwrite. Every action
calls the same ``pgclone.api`` as the management command. The restore form
shows what it restores, and refuses a restore into the admin's own database
that would leave no account able to sign in (the command line still may).
The dumps page is listed on the admin's index beside Jobs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from pgclone import api, conf, humanize
from pgclone.admin import offers, pages
from pgclone.admin.forms import DumpNowForm, RestoreForm, facts, reversible_by_default
from pgclone.admin.status import job_status, reversible
from pgclone.exceptions import PgCloneError
from pgclone.models import DumpsInStorage, Job

logger = logging.getLogger("pgclone")


# Who may stop a job: whoever may start one of its kind.
START_PERMISSION = {
    Job.Kind.DUMP: "dump_database",
    Job.Kind.RESTORE: "restore_database",
    Job.Kind.VERIFY: "restore_database",  # a trial restore runs the dump's code too
}


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(f"pgclone.{permission}"):
        raise PermissionDenied


def _start_job(request: HttpRequest, start: Any, *args: Any, **kwargs: Any) -> HttpResponse | None:
    """Start a job for this user; its page, or None (with the error shown) if refused."""
    try:
        job = start(*args, requested_by=f"{request.user.get_username()} (admin)", **kwargs)
    except PgCloneError as exc:
        messages.error(request, str(exc))
        return None
    messages.success(request, f"{job.kind.capitalize()} job {job.pk} started.")
    return redirect("admin:pgclone_job_change", job.pk)


def _moved(name: str) -> Any:
    """The dumps pages' first addresses, under the jobs: kept for bookmarks."""

    def view(request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        return redirect(reverse(name) + (f"?{query}" if query else ""))

    return view


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    # Few, narrow columns: the list fits a 1280 px window beside the admin's sidebars.
    list_display = ("short_id", "what", "database_name", "created", "took")
    list_filter = ("kind", "status", "database_name")
    search_fields = ("id", "dump_key", "database_name", "requested_by")
    # Status, progress and error are shown (and kept up to date) by the Progress box.
    fields = readonly_fields = (
        "id", "kind", "database_alias", "database_name", "dump_key", "related", "config_name",
        "requested_by", "created_on", "started_on", "finished_on", "worker_hostname",
        "heartbeat_on", "task_id", "options_shown", "result_shown",
    )  # fmt: skip
    change_form_template = "admin/pgclone/job/change_form.html"
    change_list_template = "admin/pgclone/job/change_list.html"

    @admin.display(description="id")
    def short_id(self, job: Job) -> str:
        return str(job.pk)[:8]

    @admin.display(description="job", ordering="status")
    def what(self, job: Job) -> str:
        """Kind and status (coloured, and in words), and the step a running job is in."""
        step = f" ({job.current_step})" if job.current_step and not job.is_finished else ""
        return format_html(
            '{} <span class="pgclone-status pgclone-{}">{}</span>{}',
            job.get_kind_display(), job.status, job.status, step,
        )  # fmt: skip

    @admin.display(description="created", ordering="created_at")
    def created(self, job: Job) -> str:
        return offers.when(job.created_at)

    @admin.display(description="created at")
    def created_on(self, job: Job) -> str:
        return offers.when(job.created_at)

    @admin.display(description="started at")
    def started_on(self, job: Job) -> str:
        return offers.when(job.started_at)

    @admin.display(description="finished at")
    def finished_on(self, job: Job) -> str:
        return offers.when(job.finished_at)

    @admin.display(description="last heartbeat")
    def heartbeat_on(self, job: Job) -> str:
        return offers.when(job.heartbeat_at)

    @admin.display(description="options")
    def options_shown(self, job: Job) -> str:
        return format_html('<pre class="pgclone-json">{}</pre>', json.dumps(job.options, indent=2))

    @admin.display(description="result")
    def result_shown(self, job: Job) -> str:
        return format_html('<pre class="pgclone-json">{}</pre>', json.dumps(job.result, indent=2))

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
            return pages.job_links([made], "made by the dump job ") if made else "-"
        restores = Job.objects.filter(kind=Job.Kind.RESTORE, dump_key=job.dump_key)
        trials = Job.objects.filter(kind=Job.Kind.VERIFY, dump_key=job.dump_key)
        links = [
            pages.job_links(list(found), prefix)
            for found, prefix in ((restores, "restored by "), (trials, "trial restores "))
            if found
        ]
        return format_html_join(mark_safe("<br>"), "{}", ((link,) for link in links)) or "-"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A job is deleted once it has ended: an active one is still at work (and an
        active restore's row is what allows one restore per database)."""
        if obj is not None and not obj.is_finished:
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        """The bulk delete refuses a selection that holds an active job."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        active = [job for job in objs if not job.is_finished]
        if active and super().has_delete_permission(request):
            # Not a missing permission (has_delete_permission says no to active jobs):
            # the jobs themselves are why.
            perms_needed = {name for name in perms_needed if name != self.opts.verbose_name}
        protected = [*protected, *(pages.still_active(job) for job in active)]
        return deleted, counts, perms_needed, protected

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        # Checked again at the moment of deleting: a job may have started meanwhile.
        queryset.filter(status__in=Job.FINISHED).delete()

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("dumps/", _moved("admin:pgclone_dumps")),
            path("dumps/restore/", _moved("admin:pgclone_restore")),
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

    def _undo_url(self, request: HttpRequest, job: Job) -> str:
        """The restore form for ``:previous``, when this restore left one to go back to."""
        if not (reversible(job) and job.status == Job.Status.SUCCEEDED):
            return ""
        if not (request.user.has_perm("pgclone.restore_database") and conf.allow_restore()):
            return ""
        try:
            kept, _ = offers.copies(job.database_alias)
        except PgCloneError:
            return ""
        if offers.UNDO not in kept or offers.copies_maker(job.database_name) != job:
            return ""  # a later restore replaced the copies this one kept
        return pages.restore_url(offers.UNDO, job.database_alias)

    def cancel_view(self, request: HttpRequest, job_id: Any) -> HttpResponse:
        job = api.job(job_id)
        _require(request, START_PERMISSION[job.kind])
        if request.method != "POST":
            return redirect("admin:pgclone_job_change", job.pk)
        try:
            job = api.cancel(job.pk, requested_by=f"{request.user.get_username()} (admin)")
        except PgCloneError as exc:
            messages.error(request, str(exc))
            return redirect("admin:pgclone_job_change", job.pk)
        note = job_status(job)["note"]
        if note:  # a step still runs: say so rather than claim it stopped
            messages.warning(request, note)
        else:
            messages.success(request, f"{job.kind.capitalize()} job {job.pk} cancelled.")
        return redirect("admin:pgclone_job_change", job.pk)

    def status_view(self, request: HttpRequest, job_id: Any) -> JsonResponse:
        _require(request, "view_job")
        return JsonResponse(job_status(api.job(job_id)))


@admin.register(DumpsInStorage)
class DumpsInStorageAdmin(admin.ModelAdmin):
    """The dumps page on the admin's index, beside Jobs, for whoever may view jobs:
    the page and the restore form live at its address (the jobs list links to
    them as well)."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("pgclone.view_job")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list:
        # The pages live under this entry's address, so that the sidebar marks
        # it (not Jobs) as the current one.
        wrap = self.admin_site.admin_view
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", wrap(self.dumps_view), name="pgclone_dumps"),
            path("", wrap(self.dumps_view), name="{}_{}_changelist".format(*info)),
            path("restore/", wrap(self.restore_view), name="pgclone_restore"),
        ]

    def dumps_view(self, request: HttpRequest) -> HttpResponse:
        _require(request, "view_job")
        can_dump = request.user.has_perm("pgclone.dump_database")
        form = DumpNowForm(request.POST or None, initial={"config": "default"})
        if request.method == "POST":
            _require(request, "dump_database")
            if form.is_valid():
                started = _start_job(
                    request,
                    api.dump,
                    config=form.cleaned_data["config"],
                    database=form.cleaned_data["database"],
                )
                if started:
                    return started
        can_restore = request.user.has_perm("pgclone.restore_database") and conf.allow_restore()
        context = {
            **self.admin_site.each_context(request),
            **pages.dumps_context(can_restore),
            "title": "Dumps in storage",
            "opts": self.model._meta,
            "form": form if can_dump else None,
        }
        return TemplateResponse(request, "admin/pgclone/dumps.html", context)

    def restore_view(self, request: HttpRequest) -> HttpResponse:
        _require(request, "restore_database")
        key = request.POST.get("key") or request.GET.get("key", "")
        alias = request.POST.get("database") or request.GET.get("database", "default")
        initial = {
            "key": key,
            "database": alias,
            "config": "default",
            "reversible": reversible_by_default(key, alias),
        }
        form = RestoreForm(request.POST or None, initial=initial, alias=alias)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            started = _start_job(
                request,
                api.restore,
                data["key"],
                database=data["database"],
                config=data["config"],
                reversible=data["reversible"],
            )
            if started:
                return started
        allowed = conf.allow_restore()
        context = {
            **self.admin_site.each_context(request),
            "title": "Restore a dump" if not key.startswith(":") else f"Restore {key}",
            "opts": self.model._meta,
            "form": form,
            "key": key,
            "alias": alias,
            "facts": facts(key, alias) if key and allowed else None,
            "allowed": allowed,
        }
        return TemplateResponse(request, "admin/pgclone/restore.html", context)
