"""The customers app's parts of the admin: its inlines and the card fields nobody types in.

The ModelAdmins of its models are declared whole, and registered once, by the apps whose actions and
columns they show: ``Customer`` in dunning.admin.customers (export and erasure of personal data close
dunning cases), ``PaymentMethod`` in billing.admin (network retry counters, the charge block).
"""

from django.contrib import admin

from customers.models import BillingContact, PaymentMethod


class BillingContactInline(admin.TabularInline):
    model = BillingContact
    extra = 0
    fields = ("name", "email", "phone", "language", "role", "is_primary")


# A saved method's details come from the gateway (the portal's card form, gateway events); typing
# them here would describe a card the gateway does not hold. Read-only for everyone.
CARD_FIELDS = ("kind", "brand", "last4", "exp_month", "exp_year", "gateway", "token")


class PaymentMethodInline(admin.TabularInline):
    model = PaymentMethod
    extra = 0
    fields = ("kind", "brand", "last4", "exp_month", "exp_year", "is_default", "gateway", "token", "detached_at")
    readonly_fields = CARD_FIELDS

    def has_add_permission(self, request, obj=None):
        return False  # a method is added by the customer in the portal, never typed in
