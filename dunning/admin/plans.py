"""Admin of payment plans and their per-currency limits: staff approve or reject plans through dunning.plans."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from billing.admin import money_display
from dunning import plans
from dunning.plan_models import Instalment, PaymentPlan, PlanLimit


@admin.register(PlanLimit)
class PlanLimitAdmin(admin.ModelAdmin):
    list_display = ("currency", "min_instalment_money", "max_months")
    min_instalment_money = money_display(PlanLimit, "min_instalment")


class InstalmentInline(admin.TabularInline):
    model = Instalment
    extra = 0
    can_delete = False
    fields = ("number", "due_date", "amount_money", "status", "paid_at", "decline_code")
    readonly_fields = fields
    amount_money = money_display(Instalment, "amount", "plan.currency")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(PaymentPlan)
class PaymentPlanAdmin(admin.ModelAdmin):
    list_display = ("id", "customer", "total_money", "currency", "months", "status", "auto_approved", "created_at")
    list_filter = ("status", "currency", "auto_approved")
    search_fields = ("customer__name", "customer__email", "customer__external_id")
    list_select_related = ("customer",)
    fields = ("customer", "currency", "total_money", "months", "status", "auto_approved", "decided_by", "decided_at",
              "closed_at", "invoices")
    readonly_fields = fields
    total_money = money_display(PaymentPlan, "total")
    inlines = [InstalmentInline]
    actions = ["approve", "reject"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _decide(self, request, queryset, func, label):
        ok, failed = 0, []
        for plan in queryset:
            try:
                func(plan, actor=request.user)
                ok += 1
            except plans.PlanError as exc:
                failed.append(f"#{plan.pk}: {exc}")
        if ok:
            self.message_user(request, _("%(n)d plan(s) %(label)s.") % {"n": ok, "label": label}, messages.SUCCESS)
        if failed:
            self.message_user(request, _("Not done: ") + "; ".join(failed), messages.ERROR)

    @admin.action(description=_("Approve selected plans"), permissions=["change"])
    def approve(self, request, queryset):
        self._decide(request, queryset, plans.approve_plan, _("approved"))

    @admin.action(description=_("Reject selected plans"), permissions=["change"])
    def reject(self, request, queryset):
        self._decide(request, queryset, plans.reject_plan, _("rejected"))
