from __future__ import annotations

from operator import attrgetter

from django import forms
from django.contrib import admin
from django.utils import timezone, translation
from django.utils.html import format_html_join
from django.utils.translation import gettext_lazy as _
from import_export.admin import ExportMixin

from billing import limits
from billing.models import DeclineRule, GatewayRefund, Invoice, PaymentAttempt
from billing.money import format_money, to_amount
from billing.resources import InvoiceResource, PaymentAttemptResource
from core import exports
from core.admin import AppendOnlyAdminMixin, LargeTableAdminMixin
from core.admin_paging import skip_scan_filter
from customers.admin import CARD_FIELDS
from customers.models import PaymentMethod


def money_display(model, field: str, currency: str = "currency", *, description=None):
    """An admin column or read-only field showing ``field`` with format_money in the staff member's language.

    ``currency`` is an attribute path ("plan.currency"); a blank currency (a campaign's limits for
    any currency) shows the bare amount without trailing zeros. Used by every money column, read-only
    field and inline of the admin, so nothing shows a stored 15.0000.
    """
    amount_of, currency_of = attrgetter(field), attrgetter(currency)

    @admin.display(description=description or model._meta.get_field(field).verbose_name,
                   ordering=None if "." in field else field)
    def show(self, obj) -> str:
        amount, code = amount_of(obj), currency_of(obj)
        if amount is None:
            return self.get_empty_value_display()
        if not code:
            return f"{amount.normalize():f}"
        return format_money(amount, code, translation.get_language() or "en")

    return show


class InvoiceForm(forms.ModelForm):
    """The amount inputs start at the currency's minor unit (15.00, JPY 12000), not the stored 15.0000."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.currency:
            for name in ("amount_due", "amount_paid"):
                if name in self.fields and self.initial.get(name) is not None:
                    self.initial[name] = to_amount(self.initial[name], self.instance.currency)


class PaymentAttemptInline(admin.TabularInline):
    model = PaymentAttempt
    extra = 0
    can_delete = False
    fields = ("created_at", "source", "amount_money", "outcome", "decline_code", "advice_code",
              "gateway_reference")
    readonly_fields = fields
    amount_money = money_display(PaymentAttempt, "amount")

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Invoice)
class InvoiceAdmin(ExportMixin, LargeTableAdminMixin, admin.ModelAdmin):
    export_formats = exports.FORMATS
    resource_classes = [InvoiceResource]
    # Adds an "Import invoices" button (integrations.admin.ImportJobAdmin); import-export extends it.
    change_list_template = "admin/billing/invoice/change_list_import.html"
    form = InvoiceForm
    list_display = ("number", "customer", "currency", "amount_due_money", "amount_paid_money", "due_date", "status")
    list_filter = (
        "status",
        skip_scan_filter(Invoice, "currency"),
        "due_date",
    )
    search_fields = ("number", "external_id", "customer__name", "customer__external_id")
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)
    inlines = [PaymentAttemptInline]
    readonly_fields = ("created_at", "updated_at", "paid_at")
    amount_due_money = money_display(Invoice, "amount_due")
    amount_paid_money = money_display(Invoice, "amount_paid")

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fields
        # A reader sees every field as text: the amounts as money rather than the stored decimals.
        return [f"{name}_money" if name in ("amount_due", "amount_paid") else name for name in fields]


# Charges and refunds are records of money moved: read-only, and nobody deletes a row, superusers included.

@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(ExportMixin, AppendOnlyAdminMixin, LargeTableAdminMixin, admin.ModelAdmin):
    export_formats = exports.FORMATS
    resource_classes = [PaymentAttemptResource]
    list_display = ("created_at", "invoice", "amount_money", "currency", "source", "outcome", "decline_code", "tries",
                    "message")
    list_filter = (
        "outcome", "source",
        skip_scan_filter(PaymentAttempt, "decline_code"),
        skip_scan_filter(PaymentAttempt, "currency", table="billing_invoice"),  # the invoices' currency index
    )
    search_fields = ("invoice__number", "gateway_reference", "idempotency_key")
    list_select_related = ("invoice",)
    fields = readonly_fields = [
        "amount_money" if f.name == "amount" else f.name for f in PaymentAttempt._meta.fields if f.name != "id"]
    amount_money = money_display(PaymentAttempt, "amount")


@admin.register(GatewayRefund)
class GatewayRefundAdmin(AppendOnlyAdminMixin, admin.ModelAdmin):
    """Refunds of charges that succeeded after their invoice closed (LATE_CHARGE_POLICY=refund)."""

    list_display = ("created_at", "invoice", "amount_money", "currency", "status", "gateway_reference", "tries",
                    "message")
    list_filter = ("status", "currency")
    search_fields = ("invoice__number", "gateway_reference", "idempotency_key")
    list_select_related = ("invoice",)
    fields = readonly_fields = [
        "amount_money" if f.name == "amount" else f.name for f in GatewayRefund._meta.fields if f.name != "id"]
    amount_money = money_display(GatewayRefund, "amount")


# --- Smart retries: the decline table, network counters per card -------------------


@admin.register(DeclineRule)
class DeclineRuleAdmin(admin.ModelAdmin):
    """Staff with the "change decline rule" permission (managers) may tune the table."""

    list_display = ("code", "kind", "network", "decline_class", "retry_after_hours", "description")
    list_filter = ("kind", "network", "decline_class")
    list_editable = ("decline_class", "retry_after_hours")
    search_fields = ("code", "description")
    ordering = ("kind", "network", "code")




@admin.register(PaymentMethod)
class PaymentMethodAdmin(admin.ModelAdmin):
    """A customer's saved methods, with what billing knows of each: network retry counters and the
    charge block (declared here, not in customers, which knows nothing of charging)."""

    list_display = ("__str__", "customer", "kind", "exp_month", "exp_year", "is_default", "gateway",
                    "charge_blocked_at")
    list_filter = ("kind", "brand", "gateway", "is_default", ("charge_blocked_at", admin.EmptyFieldListFilter))
    search_fields = ("customer__name", "customer__external_id", "last4")
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)
    readonly_fields = ("network_retry_counters", "charge_blocked_at", "charge_blocked_reason")
    actions = ["clear_charge_block"]

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        return (*CARD_FIELDS, *readonly) if obj is not None else readonly

    @admin.display(description=_("network retry counters"))
    def network_retry_counters(self, obj: PaymentMethod) -> str:
        if obj.pk is None:
            return "-"
        rows = limits.counters(obj, timezone.now())
        if not rows:
            return _("No network limit for this kind of method.")
        return format_html_join("", "<div>{}: {} of {}</div>", rows)

    @admin.action(description=_("Allow charging again (clear the block after a hard decline)"),
                  permissions=["change"])
    def clear_charge_block(self, request, queryset):
        done = queryset.filter(charge_blocked_at__isnull=False).update(charge_blocked_at=None,
                                                                       charge_blocked_reason="")
        self.message_user(request, _("%d payment method(s) may be charged again.") % done)
