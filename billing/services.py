"""Invoice accounting and payment attempts. Dunning decisions live in dunning.services."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.declines import classify_attempt
from billing.fees import allocate_payment
from billing.gateways import ChargeRequest, ChargeResult, GatewayError, OutcomeUnknown, get_gateway
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
    """
    with transaction.atomic():
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
        allocation = allocate_payment(invoice, amount, to_invoice, at or timezone.now())
        return AppliedPayment(invoice, amount, invoice.status == Invoice.Status.PAID,
                              to_fees=allocation.to_fees, credited=allocation.to_credit)


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


def claim_pending_attempts(now: datetime | None = None, limit: int = 100) -> list[PaymentAttempt]:
    """Lease pending attempts whose lease has run out, so only one worker calls the gateway."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.PAYMENT_ATTEMPT_LEASE_SECONDS)
    with transaction.atomic():
        ids = list(
            PaymentAttempt.objects.pending()
            .filter(lease_until__lte=now)
            .order_by("lease_until")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return []
        PaymentAttempt.objects.filter(pk__in=ids).update(lease_until=now + lease)
    return list(
        PaymentAttempt.objects.filter(pk__in=ids).select_related("invoice__customer", "payment_method")
    )


def prepare_charge(attempt: PaymentAttempt) -> ChargeRequest | ChargeResult:
    """Count the try and build the gateway request for a claimed attempt, or return the failure that
    keeps it from the gateway (no usable method). Database work only: the call is ``send_charge``."""
    PaymentAttempt.objects.filter(pk=attempt.pk).update(tries=F("tries") + 1)
    attempt.tries += 1
    method = attempt.payment_method
    if method is None or method.detached_at is not None:
        return ChargeResult(False, decline_code="no_payment_method", message="No usable payment method on file")
    if method.charge_blocked_at is not None:
        # A hard decline (or one needing a new card) ruled this method out: never send it again.
        return ChargeResult(False, decline_code="payment_method_blocked",
                            message=f"Not charged: {method.charge_blocked_reason or 'blocked after a hard decline'}")
    return ChargeRequest(
        amount=attempt.amount,
        currency=attempt.currency,
        payment_method_token=method.token,
        idempotency_key=attempt.idempotency_key,
        customer_reference=attempt.invoice.customer.external_id,
        description=f"Invoice {attempt.invoice.number}",
        metadata={"invoice": attempt.invoice.external_id, "attempt": str(attempt.pk)},
    )


def send_charge(request: ChargeRequest) -> ChargeResult:
    """The gateway call itself. Never call this inside a database transaction that holds locks; it
    may run on a GatewayPool thread.

    Raises OutcomeUnknown when the gateway may have charged: the attempt stays pending and is sent
    again later with the same idempotency key.
    """
    try:
        return get_gateway().charge(request)
    except OutcomeUnknown:
        raise
    except GatewayError as exc:
        return ChargeResult(False, decline_code="gateway_error", message=str(exc)[:255])


def settle_attempt(attempt_id: int, result: ChargeResult, *, at: datetime | None = None) -> PaymentAttempt | None:
    """Record the gateway's answer once. Returns the attempt if this call settled it, else None."""
    at = at or timezone.now()
    with transaction.atomic():
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.outcome != PaymentAttempt.Outcome.PENDING:
            return None
        attempt.outcome = PaymentAttempt.Outcome.SUCCEEDED if result.succeeded else PaymentAttempt.Outcome.FAILED
        attempt.gateway_reference = result.reference or attempt.gateway_reference
        attempt.decline_code = "" if result.succeeded else (result.decline_code or "generic_decline")
        attempt.advice_code = result.advice_code
        attempt.network_code = result.network_code
        attempt.message = result.message[:255]
        attempt.completed_at = at
        if not result.succeeded:
            attempt.decline_class = classify_attempt(attempt, at=at)
        attempt.save(
            update_fields=[
                "outcome", "gateway_reference", "decline_code", "advice_code", "network_code",
                "decline_class", "message", "completed_at", "updated_at",
            ]
        )
        return attempt


def postpone_unknown(attempt: PaymentAttempt, *, now: datetime | None = None) -> None:
    """An attempt whose outcome is unknown is asked again later, with backoff, under the same key."""
    now = now or timezone.now()
    delay = timedelta(seconds=min(60 * 2 ** max(attempt.tries, 0), 6 * 3600))
    PaymentAttempt.objects.filter(pk=attempt.pk, outcome=PaymentAttempt.Outcome.PENDING).update(
        lease_until=now + delay
    )
