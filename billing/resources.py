"""django-import-export resources: admin export of invoices and attempts, and the row-by-row baseline
that bench/imports.py compares the bulk pipeline (billing.imports) with."""

from __future__ import annotations

from import_export import fields, resources, widgets

from billing.models import Invoice, PaymentAttempt
from customers.models import Customer


class InvoiceResource(resources.ModelResource):
    customer_external_id = fields.Field(
        attribute="customer", column_name="customer_external_id",
        widget=widgets.ForeignKeyWidget(Customer, field="external_id"),
    )

    class Meta:
        model = Invoice
        import_id_fields = ("external_id",)
        fields = ("external_id", "number", "customer_external_id", "currency", "amount_due", "amount_paid",
                  "issued_at", "due_date", "status", "auto_collect", "paid_at", "created_at", "updated_at")
        export_order = fields
        skip_unchanged = True
        report_skipped = True
        clean_model_instances = True


class PaymentAttemptResource(resources.ModelResource):
    invoice_external_id = fields.Field(attribute="invoice__external_id", column_name="invoice_external_id",
                                       readonly=True)

    class Meta:
        model = PaymentAttempt
        fields = ("id", "invoice_external_id", "amount", "currency", "outcome", "source", "decline_code",
                  "advice_code", "gateway", "gateway_reference", "created_at", "completed_at")
        export_order = fields
