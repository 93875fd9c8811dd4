from django.contrib import admin
from import_export.admin import ExportMixin

from billing.models import Invoice, PaymentAttempt
from billing.resources import InvoiceResource, PaymentAttemptResource


class PaymentAttemptInline(admin.TabularInline):
    model = PaymentAttempt
    extra = 0
    can_delete = False
    fields = ("created_at", "source", "amount", "currency", "outcome", "decline_code", "advice_code",
              "gateway_reference")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Invoice)
class InvoiceAdmin(ExportMixin, admin.ModelAdmin):
    resource_classes = [InvoiceResource]
    # Adds an "Import invoices" button (integrations.admin.ImportJobAdmin); import-export extends it.
    change_list_template = "admin/billing/invoice/change_list_import.html"
    list_display = ("number", "customer", "currency", "amount_due", "amount_paid", "due_date", "status")
    list_filter = ("status", "currency")
    search_fields = ("number", "external_id", "customer__name", "customer__external_id")
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)
    date_hierarchy = "due_date"
    inlines = [PaymentAttemptInline]
    readonly_fields = ("created_at", "updated_at", "paid_at")


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(ExportMixin, admin.ModelAdmin):
    resource_classes = [PaymentAttemptResource]
    list_display = ("created_at", "invoice", "amount", "currency", "source", "outcome", "decline_code", "tries")
    list_filter = ("outcome", "source", "decline_code", "currency")
    search_fields = ("invoice__number", "gateway_reference", "idempotency_key")
    list_select_related = ("invoice",)
    readonly_fields = [f.name for f in PaymentAttempt._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
