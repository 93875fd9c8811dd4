"""Invoices and the money they receive: create, apply a payment, cancel unsent attempts. A charge
through the gateway, from claim to outcome, is billing.attempts; dunning decisions live in dunning/."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from billing.fees import allocate_payment
from billing.models import Invoice, PaymentAttempt
from billing.money import to_amount
from customers.models import Customer, PaymentMethod


@dataclass(frozen=True)
class AppliedPayment:
    invoice: Invoice
    amount: Decimal
    fully_paid: bool
    # Beyond the invoice's balance: paid its open fees, then kept as customer credit (billing.fees).
    to_fees: Decimal = Decimal("0")
    credited: Decimal = Decimal("0")
    # Unsent attempts cancelled because this payment settled the invoice.
    cancelled_attempts: tuple[int, ...] = ()


def resolve_customer(customer: Customer | str) -> Customer:
    """A Customer, or one looked up by the merchant's external id (a clear error if unknown)."""
    if isinstance(customer, Customer):
        return customer
    found = Customer.objects.filter(external_id=customer).first()
    if found is None:
        raise ValidationError({"customer": [f"Unknown customer {customer!r}"]})
    return found


def create_invoice(
    *,
    customer: Customer | str,
    external_id: str,
    number: str,
    currency: str,
    amount_due,
    issued_at,
    due_date,
    amount_paid=0,
) -> Invoice:
    """Validate everything first, then write: a bad field raises ValidationError and writes nothing."""
    invoice = Invoice(
        customer=resolve_customer(customer),
        external_id=external_id,
        number=number,
        currency=currency,
        amount_due=amount_due,
        amount_paid=amount_paid,
        issued_at=issued_at,
        due_date=due_date,
    )
    invoice.full_clean()
    if invoice.amount_paid >= invoice.amount_due and invoice.amount_due > 0:
        invoice.status = Invoice.Status.PAID
        invoice.paid_at = timezone.now()
    invoice.save()
    return invoice


def apply_payment(invoice_id: int, amount: Decimal, *, at: datetime | None = None) -> AppliedPayment:
    """Add a received payment to an invoice; marks it paid once nothing remains. Locks the row.

    Only the remaining balance goes to the invoice; the rest pays its open fees, then becomes credit.
    The payment that settles the invoice cancels its unsent attempts in the same transaction.
    """
    with transaction.atomic(savepoint=False):
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        amount = to_amount(amount, invoice.currency)
        to_invoice = min(amount, invoice.amount_remaining)
        invoice.amount_paid = invoice.amount_paid + to_invoice
        fields = ["amount_paid", "updated_at"]
        if invoice.amount_paid >= invoice.amount_due and invoice.status in (
            Invoice.Status.OPEN,
            Invoice.Status.UNCOLLECTIBLE,
        ):
            invoice.status = Invoice.Status.PAID
            invoice.paid_at = at or timezone.now()
            fields += ["status", "paid_at"]
        invoice.save(update_fields=fields)
        cancelled = ()
        if "status" in fields:
            cancelled = tuple(cancel_unsent_attempts([invoice.pk], reason="invoice paid", at=at))
        allocation = allocate_payment(invoice, amount, to_invoice, at or timezone.now())
        return AppliedPayment(invoice, amount, invoice.status == Invoice.Status.PAID,
                              to_fees=allocation.to_fees, credited=allocation.to_credit,
                              cancelled_attempts=cancelled)


def cancel_unsent_attempts(invoice_ids, *, reason: str, at: datetime | None = None) -> dict[int, int]:
    """Cancel the invoices' pending attempts that were never sent to the gateway; returns
    {attempt id: invoice id} of those cancelled.

    Called in the transaction that closes the invoice or its case. An attempt a worker has already
    claimed (tries > 0) may have charged: it is left to finish, and a success after the close follows
    LATE_CHARGE_POLICY (billing.attempts.late_charge).
    """
    at = at or timezone.now()
    with transaction.atomic(savepoint=False):
        # Locking re-reads each row after a concurrent claim, so a just-claimed attempt is skipped.
        found = dict(
            PaymentAttempt.objects.unsent().filter(invoice_id__in=list(invoice_ids))
            .select_for_update().values_list("pk", "invoice_id")
        )
        if found:
            PaymentAttempt.objects.filter(pk__in=list(found), outcome=PaymentAttempt.Outcome.PENDING, tries=0).update(
                outcome=PaymentAttempt.Outcome.CANCELLED, message=f"Cancelled: {reason}"[:255], completed_at=at,
                updated_at=at,
            )
    return found


def new_attempt(
    invoice: Invoice,
    *,
    payment_method: PaymentMethod | None,
    source: str,
    idempotency_key: str | None = None,
    amount: Decimal | None = None,
) -> PaymentAttempt:
    """An unsaved pending attempt for the invoice's remaining balance."""
    return PaymentAttempt(
        invoice=invoice,
        payment_method=payment_method,
        amount=invoice.amount_remaining if amount is None else amount,
        currency=invoice.currency,
        source=source,
        gateway=payment_method.gateway if payment_method else "",
        idempotency_key=idempotency_key or f"{source}-{invoice.pk}-{uuid.uuid4().hex}",
    )


def record_external_payment(
    invoice: Invoice, amount: Decimal, *, source: str, idempotency_key: str, reference: str = ""
) -> tuple[PaymentAttempt, bool]:
    """A payment that happened elsewhere (bank transfer, the billing system). Deduplicated by key."""
    amount = to_amount(amount, invoice.currency)
    attempt, created = PaymentAttempt.objects.get_or_create(
        idempotency_key=idempotency_key,
        defaults={
            "invoice": invoice,
            "amount": amount,
            "currency": invoice.currency,
            "source": source,
            "outcome": PaymentAttempt.Outcome.SUCCEEDED,
            "gateway_reference": reference,
            "completed_at": timezone.now(),
        },
    )
    if not created and attempt.invoice_id != invoice.pk:
        raise ValidationError("This idempotency key was already used for another invoice.")
    return attempt, created


def not_chargeable(invoice: Invoice) -> str:
    """Why an invoice must not be charged now ("" when it may)."""
    if invoice.status != Invoice.Status.OPEN:
        return f"invoice {invoice.get_status_display().lower()}"
    if invoice.amount_remaining <= 0:
        return "nothing left to pay"
    return ""
