"""django-import-export resource for exporting dunning cases from the admin."""

from __future__ import annotations

from import_export import fields, resources

from dunning.models import DunningCase


class DunningCaseResource(resources.ModelResource):
    customer_external_id = fields.Field(attribute="customer__external_id", column_name="customer_external_id",
                                        readonly=True)
    invoice_external_id = fields.Field(attribute="invoice__external_id", column_name="invoice_external_id",
                                       readonly=True)
    currency = fields.Field(attribute="invoice__currency", column_name="currency", readonly=True)
    amount_remaining = fields.Field(attribute="invoice__amount_remaining", column_name="amount_remaining",
                                    readonly=True)
    campaign_name = fields.Field(attribute="campaign__name", column_name="campaign", readonly=True)

    class Meta:
        model = DunningCase
        fields = ("id", "customer_external_id", "invoice_external_id", "campaign_name", "status", "currency",
                  "amount_remaining", "failed_at", "decline_code", "next_action_at", "paused_at", "closed_at")
        export_order = fields
