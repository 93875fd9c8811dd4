from django.contrib import admin
from import_export.admin import ImportExportMixin

from customers.models import Customer, PaymentMethod
from customers.resources import CustomerResource


class PaymentMethodInline(admin.TabularInline):
    model = PaymentMethod
    extra = 0
    fields = ("kind", "brand", "last4", "exp_month", "exp_year", "is_default", "gateway", "token", "detached_at")
    readonly_fields = ("gateway", "token")


@admin.register(Customer)
class CustomerAdmin(ImportExportMixin, admin.ModelAdmin):
    resource_classes = [CustomerResource]
    list_display = ("name", "external_id", "email", "segment", "currency", "locale", "status")
    list_filter = ("status", "currency", "locale", "segment", "is_business")
    search_fields = ("name", "email", "external_id")
    inlines = [PaymentMethodInline]
    readonly_fields = ("created_at", "updated_at", "suspended_at")


@admin.register(PaymentMethod)
class PaymentMethodAdmin(admin.ModelAdmin):
    list_display = ("__str__", "customer", "kind", "exp_month", "exp_year", "is_default", "gateway")
    list_filter = ("kind", "brand", "gateway", "is_default")
    search_fields = ("customer__name", "customer__external_id", "last4")
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)
