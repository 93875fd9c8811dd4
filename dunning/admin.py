from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from import_export.admin import ExportMixin

from billing.admin import money_display
from billing.models import Invoice, PaymentAttempt
from config import exports
from dunning import links, receipts, services
from dunning.models import Campaign, CampaignStep, CaseEvent, DunningCase
from dunning.resources import DunningCaseResource
from notifications.models import Notification


class StepFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        live = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        if self.instance.active and not live:
            raise ValidationError(_("An active campaign needs at least one step."))


class CampaignStepInline(admin.TabularInline):
    model = CampaignStep
    formset = StepFormSet
    extra = 0
    fields = ("position", "offset_days", "offset_hours", "action", "template_code", "channels", "audience",
              "escalate_to")
    ordering = ("position",)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "active", "priority", "currency", "min_amount_money", "max_amount_money", "segment")
    list_filter = ("active", "currency")
    list_editable = ("priority",)
    search_fields = ("name",)
    inlines = [CampaignStepInline]
    min_amount_money = money_display(Campaign, "min_amount")
    max_amount_money = money_display(Campaign, "max_amount")


class CaseEventInline(admin.TabularInline):
    model = CaseEvent
    extra = 0
    can_delete = False
    fields = ("at", "kind", "message", "actor_label", "step", "attempt")
    readonly_fields = fields
    ordering = ("at", "id")
    verbose_name_plural = _("Timeline")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _run_action(modeladmin, request, queryset, func, done_label: str):
    ok, failed = 0, []
    for case in queryset:
        try:
            func(case, actor=request.user)
            ok += 1
        except services.DunningError as exc:
            failed.append(f"#{case.pk}: {exc}")
    if ok:
        modeladmin.message_user(
            request, ngettext("%(n)d case %(label)s.", "%(n)d cases %(label)s.", ok) % {"n": ok, "label": done_label},
            messages.SUCCESS,
        )
    if failed:
        modeladmin.message_user(request, _("Not done: ") + "; ".join(failed), messages.ERROR)


@admin.register(DunningCase)
class DunningCaseAdmin(ExportMixin, admin.ModelAdmin):
    export_formats = exports.FORMATS
    resource_classes = [DunningCaseResource]
    list_display = ("id", "customer", "invoice", "amount", "campaign", "status", "current_step", "next_action_at")
    list_filter = ("status", "campaign", "current_step", "invoice__currency")
    search_fields = ("customer__name", "customer__email", "customer__external_id", "invoice__number",
                     "invoice__external_id")
    list_select_related = ("customer", "invoice", "campaign", "current_step", "current_step__campaign")
    date_hierarchy = "failed_at"
    show_full_result_count = False
    inlines = [CaseEventInline]
    actions = ["pause", "resume", "cancel", "retry_now", "mark_paid"]
    fields = ("customer", "invoice", "campaign", "status", "failed_at", "decline_code", "current_step",
              "next_step", "next_action_at", "paused_at", "closed_at", "attempts_table", "messages_table")
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
        rows = Notification.objects.filter(reference=services.case_reference(obj.pk)).order_by("created_at")
        return render_to_string("admin/dunning/messages_table.html", {"rows": rows})

    @admin.action(description=_("Pause selected cases"), permissions=["change"])
    def pause(self, request, queryset):
        _run_action(self, request, queryset, services.pause_case, _("paused"))

    @admin.action(description=_("Resume selected cases"), permissions=["change"])
    def resume(self, request, queryset):
        _run_action(self, request, queryset, services.resume_case, _("resumed"))

    @admin.action(description=_("Cancel selected cases"), permissions=["change"])
    def cancel(self, request, queryset):
        _run_action(self, request, queryset, services.cancel_case, _("cancelled"))

    @admin.action(description=_("Retry payment now"), permissions=["change"])
    def retry_now(self, request, queryset):
        ok, failed = [], []
        for case in queryset.select_related("invoice"):
            try:
                attempt = services.retry_now(case, actor=request.user)
            except services.DunningError as exc:
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
class CaseEventAdmin(admin.ModelAdmin):
    list_display = ("at", "case", "kind", "message", "actor_label")
    list_filter = ("kind",)
    search_fields = ("message", "kind")
    list_select_related = ("case",)
    raw_id_fields = ("case",)
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

# Order matters: the cockpit re-registers the Campaign and DunningCase admins, the extras then attach
# their inlines and actions to whatever is registered, and the large-table tuning runs last.
from dunning import admin_plans  # noqa: E402,F401,I001  (payment plans and limits)
from dunning import admin_cockpit  # noqa: E402,F401,I001  (work queue, variants, preview)
from dunning import admin_extras  # noqa: E402,F401,I001  (fees, contacts and privacy admin)
from config.admin_paging import tune_large_changelists  # noqa: E402,I001

# --- Smart retries: the retry timing policy of a campaign, the retry state of a case ------------
from dunning.models import RetryPolicy  # noqa: E402,I001


class RetryPolicyInline(admin.StackedInline):
    model = RetryPolicy
    extra = 0
    max_num = 1
    verbose_name = verbose_name_plural = _(
        "Retry timing (without one: charge when the step is due, at least 20 hours apart)")


def attach_retry_settings() -> None:
    """Add to whatever admin is registered for campaigns and cases (the cockpit replaces the base ones)."""
    campaign_admin = admin.site.get_model_admin(Campaign)
    if RetryPolicyInline not in campaign_admin.inlines:
        campaign_admin.inlines = [*campaign_admin.inlines, RetryPolicyInline]
    case_admin = admin.site.get_model_admin(DunningCase)
    if "retry_state" not in case_admin.list_filter:
        case_admin.list_filter = (*case_admin.list_filter, "retry_state")
    if "retry_state" not in case_admin.fields:
        case_admin.fields = (*case_admin.fields, "retry_state")
        case_admin.readonly_fields = (*case_admin.readonly_fields, "retry_state")


attach_retry_settings()
tune_large_changelists(admin.site)
