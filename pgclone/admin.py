"""Read-mostly admin for jobs: what ran, when, how long each step took."""

from __future__ import annotations

from django.contrib import admin

from pgclone.models import Job, JobStep


class JobStepInline(admin.TabularInline):
    model = JobStep
    extra = 0
    can_delete = False
    fields = ("position", "name", "status", "started_at", "finished_at", "message")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "database_name", "current_step", "created_at")
    list_filter = ("kind", "status", "database_name")
    search_fields = ("id", "dump_key", "database_name", "requested_by")
    inlines = [JobStepInline]
    readonly_fields = [field.name for field in Job._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
