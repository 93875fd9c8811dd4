from django.contrib import admin, messages
from django.db.models import F
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from import_export.admin import ImportExportMixin

from core import exports
from customers.models import BillingContact, Customer, PaymentMethod
from customers.resources import IMPORT_FORMATS, CustomerResource, FileError


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


@admin.register(Customer)
class CustomerAdmin(ImportExportMixin, admin.ModelAdmin):
    export_formats = exports.FORMATS
    resource_classes = [CustomerResource]
    import_formats = IMPORT_FORMATS
    list_display = ("name", "external_id", "email", "segment", "currency", "locale", "status")
    list_filter = ("status", "currency", "locale", "segment", "is_business")
    search_fields = ("name", "email", "external_id")
    inlines = [PaymentMethodInline, BillingContactInline]
    # The status changes through dunning only (a suspension step, reinstatement on payment), which also
    # writes suspended_at and the timeline.
    readonly_fields = ("status", "created_at", "updated_at", "suspended_at", "portal_token_version")
    actions = ["revoke_portal_links"]

    def add_data_read_fail_error_to_form(self, form, e):
        # django-import-export names only the exception's type; say what is wrong with the file, and where.
        if isinstance(e, FileError):
            form.add_error("import_file", str(e))
        elif isinstance(e, UnicodeDecodeError):
            line = e.object[:e.start].count(b"\n") + 1
            form.add_error("import_file", _("Line %(line)s: the file is not UTF-8. Save it as CSV UTF-8 and upload it "
                                            "again.") % {"line": line})
        else:
            super().add_data_read_fail_error_to_form(form, e)

    @admin.action(description=_("Revoke all portal links"), permissions=["change"])
    def revoke_portal_links(self, request, queryset):
        # Every link carries the version it was made with; bumping it makes all earlier links invalid.
        count = queryset.update(portal_token_version=F("portal_token_version") + 1)
        self.message_user(
            request,
            ngettext("Portal links revoked for %(n)d customer.", "Portal links revoked for %(n)d customers.",
                     count) % {"n": count},
            messages.SUCCESS,
        )


@admin.register(PaymentMethod)
class PaymentMethodAdmin(admin.ModelAdmin):
    list_display = ("__str__", "customer", "kind", "exp_month", "exp_year", "is_default", "gateway")
    list_filter = ("kind", "brand", "gateway", "is_default")
    search_fields = ("customer__name", "customer__external_id", "last4")
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        return (*CARD_FIELDS, *readonly) if obj is not None else readonly
