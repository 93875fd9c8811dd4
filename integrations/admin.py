"""Admin: API keys (shown once), the inbox of external events and invoice imports (upload, preview,
confirm, progress)."""

from __future__ import annotations

import os
import uuid

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.text import get_valid_filename
from django.utils.translation import gettext_lazy as _
from django_q.tasks import async_task

from billing.imports import NATIVE_COLUMNS, ImportReport
from core.admin import ReadOnlyAdminMixin
from integrations import imports
from integrations.models import ApiKey, ImportJob, InboundEvent

# --- API keys -------------------------------------------------------------------------------------

class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("name", "scope")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "key_prefix", "scope", "created_at", "last_used_at", "revoked_at")
    list_filter = ("scope", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix")
    readonly_fields = ("key_prefix", "created_by", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    @admin.display(description=_("key"))
    def key_prefix(self, obj: ApiKey) -> str:
        return f"dk_{obj.prefix}_…" if obj.prefix else "-"

    def get_readonly_fields(self, request, obj=None):
        # The scope of an existing key cannot be widened: issue a new key instead.
        return (*self.readonly_fields, "scope") if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, secret = ApiKey.issue(obj.name, obj.scope, created_by=request.user)
        obj.pk, obj.prefix = key.pk, key.prefix
        obj._state.adding = False
        request._new_api_key = secret

    def response_add(self, request, obj, post_url_continue=None):
        secret = getattr(request, "_new_api_key", None)
        if not secret:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "key": obj, "secret": secret,
                   "opts": self.opts, "title": _("API key created")}
        response = TemplateResponse(request, "admin/integrations/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description=_("Revoke selected keys (immediately)"), permissions=["change"])
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, _("%d key(s) revoked.") % count, messages.SUCCESS)


@admin.register(InboundEvent)
class InboundEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The inbox: every event received from the API and the gateways' webhooks, and what it did."""

    list_display = ("received_at", "source", "event_id", "kind", "status", "applied_at", "error", "api_key")
    list_filter = ("source", "status", "kind")
    search_fields = ("event_id", "object_id")
    readonly_fields = [f.name for f in InboundEvent._meta.fields]


# --- Invoice imports ------------------------------------------------------------------------------

class ImportUploadForm(forms.Form):
    file = forms.FileField(help_text=_("CSV (UTF-8, UTF-16 or Windows-1252; comma, semicolon or tab) or XLSX."))
    format = forms.ChoiceField(choices=[("native", _("Native columns")), ("stripe", _("Stripe invoice export"))])
    number_format = forms.ChoiceField(
        choices=ImportJob.NumberFormat.choices, required=False, label=_("Number format"),
        help_text=_("How the file writes amounts. Needed when an amount such as 1,234 or 1.234 could be read "
                    "either way; without it such rows are refused."))
    date_format = forms.CharField(
        required=False, max_length=32,
        help_text=_("Only if the dates are not ISO (YYYY-MM-DD): e.g. %d/%m/%Y for 31/03/2026."))

    def clean_date_format(self):
        value = self.cleaned_data["date_format"]
        if value and "%" not in value:
            raise forms.ValidationError(_("Use strftime codes, e.g. %d/%m/%Y."))
        return value


class ConfirmForm(forms.Form):
    valid_only = forms.BooleanField(required=False, label=_("Import valid rows only (skip the invalid ones)"))


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ("created_at", "file_name", "format", "status", "processed", "total", "created_by")
    list_filter = ("status", "format")
    RUNNING = (ImportJob.Status.VALIDATING, ImportJob.Status.QUEUED, ImportJob.Status.RUNNING)

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm("integrations.add_importjob") or super().has_change_permission(request, obj)

    def get_urls(self):
        extra = [path("<int:pk>/skipped.csv", self.admin_site.admin_view(self.skipped_view),
                      name="integrations_importjob_skipped")]
        return extra + super().get_urls()

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            job = self._start(request, form)
            return HttpResponseRedirect(reverse("admin:integrations_importjob_change", args=[job.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.opts, "form": form,
                   "title": _("Import invoices"), "columns": NATIVE_COLUMNS}
        return TemplateResponse(request, "admin/integrations/importjob/upload.html", context)

    def _start(self, request, form) -> ImportJob:
        upload = form.cleaned_data["file"]
        name = get_valid_filename(os.path.basename(upload.name)) or "upload.csv"
        # The default storage (a shared volume or object storage) lets any web server or worker read it.
        stored = default_storage.save(f"imports/{uuid.uuid4().hex}/{name}", upload)
        job = ImportJob.objects.create(
            file_name=name[:255], stored_path=stored, size=upload.size, format=form.cleaned_data["format"],
            date_format=form.cleaned_data["date_format"], number_format=form.cleaned_data["number_format"],
            created_by=request.user,
            status=ImportJob.Status.VALIDATING,
        )
        if imports.runs_in_background(job):
            transaction.on_commit(lambda: async_task("integrations.tasks.preview_import_job", job.pk))
        else:
            imports.preview_job(job)
        return job

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = get_object_or_404(ImportJob, pk=object_id)
        if not self.has_change_permission(request, job):
            raise PermissionDenied
        report = ImportReport.from_dict(job.report) if job.report else None
        form = ConfirmForm(request.POST or None)
        if request.method == "POST" and job.status == ImportJob.Status.PREVIEW and form.is_valid():
            valid_only = form.cleaned_data["valid_only"]
            if report and report.file_error:
                messages.error(request, _("This file cannot be imported: %s") % report.file_error)
            elif report and report.invalid and not valid_only:
                messages.error(request, _("Some rows are invalid: fix the file, or choose to import the valid "
                                          "rows only."))
            else:
                ImportJob.objects.filter(pk=job.pk).update(valid_only=valid_only)
                job.valid_only = valid_only
                imports.confirm_job(job, actor=request.user)
            return HttpResponseRedirect(request.path)
        job.refresh_from_db()
        percent = int(100 * job.processed / job.total) if job.total else 0
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "job": job, "report": report,
            "form": form, "title": str(job), "running": job.status in self.RUNNING, "percent": min(percent, 100),
            "original": job, "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/integrations/importjob/detail.html", context)

    def skipped_view(self, request, pk):
        job = get_object_or_404(ImportJob, pk=pk)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        report = ImportReport.from_dict(job.report or {})
        response = HttpResponse(report.skipped_csv(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="skipped-{job.pk}.csv"'
        return response
