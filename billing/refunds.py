"""Refunds reported by the billing system: money given back lowers what was paid on an invoice."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from billing.models import Invoice
from billing.money import to_amount


def apply_refund(invoice_id: int, amount: Decimal) -> Invoice:
    """Lower amount_paid; a paid invoice with something left to pay is open again. Locks the row."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        amount = to_amount(amount, invoice.currency)
        if amount <= 0:
            raise ValidationError({"amount": ["A refund must be more than zero."]})
        if amount > invoice.amount_paid:
            raise ValidationError({"amount": [f"Only {invoice.amount_paid} {invoice.currency} was paid."]})
        invoice.amount_paid -= amount
        fields = ["amount_paid", "updated_at"]
        if invoice.status == Invoice.Status.PAID and invoice.amount_paid < invoice.amount_due:
            invoice.status = Invoice.Status.OPEN
            invoice.paid_at = None
            fields += ["status", "paid_at"]
        invoice.save(update_fields=fields)
        return invoice
