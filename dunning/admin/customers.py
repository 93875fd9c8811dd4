"""Admin of customers, declared here whole and registered once: besides what the customers app owns
(details, contacts, saved methods, portal links) it exports and erases a customer's personal data
(dunning.privacy), which cancels dunning cases and reaches every app, so it cannot live in customers,
which imports no other app."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import F
from django.http import HttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from import_export.admin import ImportExportMixin

from core import exports
from core.admin import LargeTableAdminMixin
from core.admin_paging import skip_scan_filter
from customers.admin import BillingContactInline, PaymentMethodInline
from customers.models import Customer
from customers.resources import IMPORT_FORMATS, CustomerResource, FileError
from dunning import privacy
from dunning.admin.confirm import confirm_action
from dunning.errors import DunningError


@admin.register(Customer)
class CustomerAdmin(ImportExportMixin, LargeTableAdminMixin, admin.ModelAdmin):
    export_formats = exports.FORMATS
    resource_classes = [CustomerResource]
    import_formats = IMPORT_FORMATS
    list_display = ("name", "external_id", "email", "segment", "currency", "locale", "status")
    list_filter = (
        "status",
        skip_scan_filter(Customer, "currency"),
        "locale", "segment", "is_business",
    )
    search_fields = ("name", "email", "external_id")
    inlines = [PaymentMethodInline, BillingContactInline]
    # The status changes through dunning only (a suspension step, reinstatement on payment), which also
    # writes suspended_at and the timeline.
    readonly_fields = ("status", "created_at", "updated_at", "suspended_at", "portal_token_version")
    actions = ["revoke_portal_links", "export_personal_data", "erase_personal_data"]

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

    @admin.action(description=_("Export personal data (JSON)"), permissions=["change"])
    def export_personal_data(self, request, queryset):
        data = [privacy.export_customer(c) for c in queryset]
        body = json.dumps(data[0] if len(data) == 1 else data, cls=DjangoJSONEncoder, indent=2)
        name = f"customer-{queryset[0].pk}" if len(data) == 1 else "customers"
        response = HttpResponse(body, content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name}-export-{timezone.now():%Y%m%d}.json"'
        return response

    @admin.action(description=_("Erase personal data (keeps invoices)"), permissions=["delete"])
    def erase_personal_data(self, request, queryset):
        if request.POST.get("confirm") != "yes":
            return confirm_action(
                self, request, queryset, action="erase_personal_data", title=_("Erase personal data"),
                intro=_("Names, addresses, phone numbers, message texts, notes and contacts of these "
                        "customers are anonymised. Invoice numbers, amounts and dates are kept. "
                        "This cannot be undone."),
                field="close_active_cases", label=_("Also cancel their open dunning cases"), kind="checkbox")
        close = request.POST.get("close_active_cases") == "on"
        done, refused = 0, []
        for customer in queryset:
            try:
                privacy.erase_customer(customer, actor=request.user, close_active_cases=close)
                done += 1
            except DunningError as exc:
                refused.append(str(exc))
        if done:
            self.message_user(request, _("%(n)d customer(s) erased.") % {"n": done}, messages.SUCCESS)
        if refused:
            self.message_user(request, _("Not erased: ") + "; ".join(refused), messages.ERROR)
        return None
