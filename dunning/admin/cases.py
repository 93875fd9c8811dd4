"""Admin of dunning cases and their timeline: staff actions on cases, services in dunning.cases and dunning.payments."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from import_export.admin import ExportMixin

from billing.admin import money_display
from billing.models import Invoice, PaymentAttempt
from core import exports
from core.admin import AppendOnlyAdminMixin, LargeTableAdminMixin
from core.admin_paging import skip_scan_filter
from dunning import cases, links, payments, receipts
from dunning.admin.workqueue import WorkItemInline
from dunning.errors import DunningError
from dunning.models import CampaignStep, CaseEvent, DunningCase, case_key
from dunning.resources import DunningCaseResource
from notifications.models import Notification


class CaseEventInline(AppendOnlyAdminMixin, admin.TabularInline):
    model = CaseEvent
    extra = 0
    can_delete = False
    fields = ("at", "kind", "message", "actor_label", "step", "attempt")
    readonly_fields = fields
    ordering = ("at", "id")
    verbose_name_plural = _("Timeline")


def _run_action(modeladmin, request, queryset, func, done_label: str):
    ok, failed = 0, []
    for case in queryset:
        try:
            func(case, actor=request.user)
            ok += 1
        except DunningError as exc:
            failed.append(f"#{case.pk}: {exc}")
    if ok:
        modeladmin.message_user(
            request, ngettext("%(n)d case %(label)s.", "%(n)d cases %(label)s.", ok) % {"n": ok, "label": done_label},
            messages.SUCCESS,
        )
    if failed:
        modeladmin.message_user(request, _("Not done: ") + "; ".join(failed), messages.ERROR)


class StepFilter(admin.SimpleListFilter):
    """The current step, without one campaign query per step."""

    title = _("current step")
    parameter_name = "current_step__id__exact"

    def lookups(self, request, model_admin):
        steps = CampaignStep.objects.select_related("campaign").order_by("campaign__name", "position")
        return [(str(s.pk), str(s)) for s in steps]

    def queryset(self, request, queryset):
        return queryset.filter(current_step_id=self.value()) if self.value() else queryset


@admin.register(DunningCase)
class DunningCaseAdmin(ExportMixin, LargeTableAdminMixin, admin.ModelAdmin):
    export_formats = exports.FORMATS
    resource_classes = [DunningCaseResource]
    list_display = ("id", "customer", "invoice", "amount", "campaign", "status", "current_step", "next_action_at",
                    "variant")
    # Date filters instead of a date_hierarchy, and an index-backed currency list (an "all values"
    # filter would scan every invoice).
    list_filter = ("status", "campaign", StepFilter,
                   skip_scan_filter(DunningCase, "invoice__currency"),
                   "failed_at", "closed_at", "retry_state")
    search_fields = ("customer__name", "customer__email", "customer__external_id", "invoice__number",
                     "invoice__external_id")
    list_select_related = ("customer", "invoice", "campaign", "current_step", "current_step__campaign", "variant")
    inlines = [CaseEventInline, WorkItemInline]
    actions = ["pause", "resume", "cancel", "retry_now", "mark_paid"]
    fields = ("customer", "invoice", "campaign", "status", "failed_at", "decline_code", "current_step",
              "next_step", "next_action_at", "paused_at", "closed_at", "attempts_table", "messages_table", "variant",
              "retry_state")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None and request.user.has_perm(links.SEND_PERMISSION):
            obj.staff_portal_url = links.staff_link(obj.customer, request.user)
        return obj

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return (*fields, "portal_link") if hasattr(obj, "staff_portal_url") else fields

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "portal_link")

    @admin.display(description=_("portal link"))
    def portal_link(self, obj: DunningCase) -> str:
        return format_html(
            '<input type="text" readonly size="90" value="{}" aria-describedby="portal-link-help">'
            '<div class="help" id="portal-link-help">{}</div>',
            getattr(obj, "staff_portal_url", ""),
            _("A link to this customer's portal, made for you: what is done through it is logged under your "
              "name. It works for %(days)d days.") % {"days": settings.PORTAL_LINK_MAX_AGE_DAYS},
        )

    amount = money_display(Invoice, "invoice.amount_remaining", "invoice.currency", description=_("amount due"))

    @admin.display(description=_("payment attempts"))
    def attempts_table(self, obj: DunningCase) -> str:
        rows = PaymentAttempt.objects.filter(invoice_id=obj.invoice_id).order_by("created_at")
        return render_to_string("admin/dunning/attempts_table.html", {"rows": rows})

    @admin.display(description=_("messages"))
    def messages_table(self, obj: DunningCase) -> str:
        rows = Notification.objects.filter(reference=case_key(obj.pk)).order_by("created_at")
        return render_to_string("admin/dunning/messages_table.html", {"rows": rows})

    @admin.action(description=_("Pause selected cases"), permissions=["change"])
    def pause(self, request, queryset):
        _run_action(self, request, queryset, cases.pause_case, _("paused"))

    @admin.action(description=_("Resume selected cases"), permissions=["change"])
    def resume(self, request, queryset):
        _run_action(self, request, queryset, cases.resume_case, _("resumed"))

    @admin.action(description=_("Cancel selected cases"), permissions=["change"])
    def cancel(self, request, queryset):
        _run_action(self, request, queryset, cases.cancel_case, _("cancelled"))

    @admin.action(description=_("Retry payment now"), permissions=["change"])
    def retry_now(self, request, queryset):
        ok, failed = [], []
        for case in queryset.select_related("invoice"):
            try:
                attempt = payments.retry_now(case, actor=request.user)
            except DunningError as exc:
                failed.append(f"#{case.pk}: {exc}")
                continue
            (ok if attempt.outcome == PaymentAttempt.Outcome.SUCCEEDED else failed).append(
                f"#{case.pk}: {attempt.get_outcome_display()}"
                + (f" ({attempt.decline_code})" if attempt.decline_code else "")
            )
        if ok:
            self.message_user(request, _("Paid: ") + "; ".join(ok), messages.SUCCESS)
        if failed:
            self.message_user(request, _("Not paid: ") + "; ".join(failed), messages.WARNING)

    @admin.action(description=_("Mark paid (received outside the gateway)"), permissions=["change"])
    def mark_paid(self, request, queryset):
        _run_action(self, request, queryset, receipts.mark_paid, _("marked paid"))


@admin.register(CaseEvent)
class CaseEventAdmin(AppendOnlyAdminMixin, LargeTableAdminMixin, admin.ModelAdmin):
    """The case timeline: append-only, nobody deletes an event, superusers included."""

    list_display = ("at", "case", "kind", "message", "actor_label")
    list_filter = (skip_scan_filter(CaseEvent, "kind"),)
    search_fields = ("message", "kind")
    list_select_related = ("case",)
    raw_id_fields = ("case",)
