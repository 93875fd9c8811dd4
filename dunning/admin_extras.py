"""Admin for fees, billing contacts and privacy (issue 8), kept apart from dunning/admin.py.

The privacy actions are attached to the registered Customer admin (customers must not import
dunning); the fee policy is an inline of the campaign; fees are waived with a reason.
"""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.admin import money_display
from billing.models import InvoiceFee
from customers.models import Customer
from dunning import fees, privacy
from dunning.errors import DunningError
from dunning.models import Campaign, FeePolicy


def _confirm(request, queryset, *, action: str, title: str, intro: str, field: str, label: str, kind: str):
    return TemplateResponse(request, "admin/dunning/confirm_action.html", {
        **admin.site.each_context(request), "title": title, "intro": intro, "objects": queryset,
        "action": action, "field": field, "label": label, "kind": kind,
        "opts": queryset.model._meta, "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    })


@admin.action(description=_("Export personal data (JSON)"), permissions=["change"])
def export_personal_data(modeladmin, request, queryset):
    exports = [privacy.export_customer(c) for c in queryset]
    body = json.dumps(exports[0] if len(exports) == 1 else exports, cls=DjangoJSONEncoder, indent=2)
    name = f"customer-{queryset[0].pk}" if len(exports) == 1 else "customers"
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{name}-export-{timezone.now():%Y%m%d}.json"'
    return response


@admin.action(description=_("Erase personal data (keeps invoices)"), permissions=["delete"])
def erase_personal_data(modeladmin, request, queryset):
    if request.POST.get("confirm") != "yes":
        return _confirm(request, queryset, action="erase_personal_data", title=_("Erase personal data"),
                        intro=_("Names, addresses, phone numbers, message texts, notes and contacts of these "
                                "customers are anonymised. Invoice numbers, amounts and dates are kept. "
                                "This cannot be undone."),
                        field="close_active_cases", label=_("Also cancel their open dunning cases"),
                        kind="checkbox")
    close = request.POST.get("close_active_cases") == "on"
    done, refused = 0, []
    for customer in queryset:
        try:
            privacy.erase_customer(customer, actor=request.user, close_active_cases=close)
            done += 1
        except DunningError as exc:
            refused.append(str(exc))
    if done:
        modeladmin.message_user(request, _("%(n)d customer(s) erased.") % {"n": done}, messages.SUCCESS)
    if refused:
        modeladmin.message_user(request, _("Not erased: ") + "; ".join(refused), messages.ERROR)
    return None


def attach_customer_actions() -> None:
    model_admin = admin.site.get_model_admin(Customer)
    current = list(model_admin.actions or [])
    for action in (export_personal_data, erase_personal_data):
        if action not in current:
            current.append(action)
    model_admin.actions = current


class FeePolicyInline(admin.StackedInline):
    model = FeePolicy
    extra = 1  # a blank, disabled policy is not saved unless staff change it
    max_num = 1
    fields = ("enabled", "preset", "business_only", "grace_days", "fixed_fees", "percentage",
              "annual_interest_rate", "reference_rate", "caps")


def attach_campaign_inline() -> None:
    model_admin = admin.site.get_model_admin(Campaign)
    if FeePolicyInline not in model_admin.inlines:
        model_admin.inlines = [*model_admin.inlines, FeePolicyInline]


@admin.register(InvoiceFee)
class InvoiceFeeAdmin(admin.ModelAdmin):
    list_display = ("invoice", "kind", "amount_money", "amount_paid_money", "currency", "status", "accrued_through",
                    "final")
    list_filter = ("status", "kind", "currency")
    search_fields = ("invoice__number", "invoice__customer__name", "invoice__customer__external_id")
    list_select_related = ("invoice",)
    fields = readonly_fields = [
        {"amount": "amount_money", "amount_paid": "amount_paid_money"}.get(f.name, f.name)
        for f in InvoiceFee._meta.fields if f.name != "id"]
    amount_money = money_display(InvoiceFee, "amount")
    amount_paid_money = money_display(InvoiceFee, "amount_paid")
    actions = ["waive"]

    def has_add_permission(self, request):
        return False

    @admin.action(description=_("Waive selected fees"), permissions=["change"])
    def waive(self, request, queryset):
        reason = (request.POST.get("reason") or "").strip()
        if request.POST.get("confirm") != "yes" or not reason:
            return _confirm(request, queryset, action="waive", title=_("Waive fees"),
                            intro=_("The reason is written on the case timeline."), field="reason",
                            label=_("Reason"), kind="text")
        done, refused = 0, []
        for fee in queryset:
            try:
                fees.waive_fee(fee, actor=request.user, reason=reason)
                done += 1
            except DunningError as exc:
                refused.append(f"#{fee.pk}: {exc}")
        if done:
            self.message_user(request, _("%(n)d fee(s) waived.") % {"n": done}, messages.SUCCESS)
        if refused:
            self.message_user(request, _("Not waived: ") + "; ".join(refused), messages.ERROR)
        return None


attach_customer_actions()
attach_campaign_inline()
