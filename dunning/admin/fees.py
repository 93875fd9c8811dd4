"""Admin of late fees and interest: the fee policy of a campaign (an inline of its admin) and the fees
charged on invoices, waived with a reason through dunning.fees."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from billing.admin import money_display
from billing.models import InvoiceFee
from dunning import fees
from dunning.admin.confirm import confirm_action
from dunning.errors import DunningError
from dunning.models import FeePolicy


class FeePolicyInline(admin.StackedInline):
    model = FeePolicy
    extra = 1  # a blank, disabled policy is not saved unless staff change it
    max_num = 1
    fields = ("enabled", "preset", "business_only", "grace_days", "fixed_fees", "percentage",
              "annual_interest_rate", "reference_rate", "caps")


# Declared here, not in billing: waiving a fee is written on the case timeline (dunning.fees).
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
            return confirm_action(self, request, queryset, action="waive", title=_("Waive fees"),
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
