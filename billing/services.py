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
from billing.gateways import (
    ChargeRequest,
    ChargeResult,
    GatewayError,
    OutcomeUnknown,
    RefundRequest,
    RefundResult,
    get_gateway,
    get_gateway_by_name,
)
from billing.models import GatewayRefund, Invoice, PaymentAttempt
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
    LATE_CHARGE_POLICY (settle_late_charge).
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


@dataclass(frozen=True)
class Started:
    """What start_attempt decided: ``attempt`` is claimed for one gateway call, or None (``cancelled``
    says why it was cancelled instead; neither: another worker has it or it is settled)."""

    attempt: PaymentAttempt | None
    cancelled: str = ""


def not_chargeable(invoice: Invoice) -> str:
    """Why an invoice must not be charged now ("" when it may)."""
    if invoice.status != Invoice.Status.OPEN:
        return f"invoice {invoice.get_status_display().lower()}"
    if invoice.amount_remaining <= 0:
        return "nothing left to pay"
    return ""


def start_attempt(attempt_id: int, invoice_id: int, *, now: datetime | None = None) -> Started:
    """Just before the gateway call: re-check under lock that the attempt is still wanted, and claim it.

    With the invoice and the attempt locked, an attempt never sent (tries 0) is cancelled if the
    invoice is no longer open or nothing remains, and lowered to what remains after a partial
    payment (its key was never used, so the gateway sees one request). Then one conditional update
    counts the try and extends the lease; it must touch exactly one row, or another worker got there
    first. An attempt sent before (tries > 0, outcome unknown) is always sent again with its key: the
    gateway answers with the first outcome, and only asking resolves it. The call itself happens
    after this returns, outside the transaction (prepare_charge, then send_charge).
    """
    now = now or timezone.now()
    with transaction.atomic():
        # The invoice, then the attempt, as apply_payment and settle_attempt lock: closing the invoice
        # and claiming its attempt serialize, and never deadlock.
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        # Locked with what the call needs (its method, the invoice's customer), read in this transaction.
        attempt = (PaymentAttempt.objects.select_for_update(of=("self",))
                   .select_related("invoice__customer", "payment_method").get(pk=attempt_id))
        if attempt.outcome != PaymentAttempt.Outcome.PENDING:
            return Started(None)
        amount = attempt.amount
        if attempt.tries == 0:
            if reason := not_chargeable(invoice):
                PaymentAttempt.objects.filter(pk=attempt.pk, outcome=PaymentAttempt.Outcome.PENDING, tries=0).update(
                    outcome=PaymentAttempt.Outcome.CANCELLED, message=f"Cancelled: {reason}"[:255],
                    completed_at=now, updated_at=now,
                )
                return Started(None, cancelled=reason)
            amount = min(amount, invoice.amount_remaining)
        lease = timedelta(seconds=settings.PAYMENT_ATTEMPT_LEASE_SECONDS)
        claimed = PaymentAttempt.objects.filter(
            pk=attempt.pk, outcome=PaymentAttempt.Outcome.PENDING, tries=attempt.tries
        ).update(tries=F("tries") + 1, amount=amount, lease_until=now + lease, updated_at=now)
        if claimed != 1:
            return Started(None)
    attempt.tries, attempt.amount, attempt.lease_until, attempt.updated_at = attempt.tries + 1, amount, now + lease, now
    return Started(attempt)


def prepare_charge(attempt: PaymentAttempt) -> ChargeRequest | ChargeResult:
    """Build the gateway request for an attempt claimed by start_attempt (which counted the try), or
    return the failure that keeps it from the gateway (no usable method). The call is ``send_charge``."""
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


def settle_attempt(attempt_id: int, invoice_id: int, result: ChargeResult, *,
                   at: datetime | None = None) -> PaymentAttempt | None:
    """Record the gateway's answer once. Returns the attempt if this call settled it, else None."""
    at = at or timezone.now()
    # Inside the caller's transaction when there is one, without a savepoint of its own (an error
    # aborts the whole settle anyway): a round trip less per charge, twice.
    with transaction.atomic(savepoint=False):
        # Invoice first, then the attempt: the order start_attempt and apply_payment lock in. The
        # locked invoice rides on the attempt (late_charge and the caller read it, fresh).
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.outcome != PaymentAttempt.Outcome.PENDING:
            return None
        attempt.invoice = invoice
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


# --- Late charges: a success that arrives after the invoice was settled another way ---------------

@dataclass(frozen=True)
class LateCharge:
    """The part of a successful attempt the invoice can no longer take, and what happens to it."""

    excess: Decimal
    policy: str  # "refund" or "hold" (settings.LATE_CHARGE_POLICY)
    invoice_status: str
    refund: GatewayRefund | None = None


def late_charge(attempt: PaymentAttempt, *, at: datetime | None = None) -> LateCharge | None:
    """Inside the transaction that settles a successful attempt: how much of it came too late.

    The invoice is the one settle_attempt locked. Money beyond what the invoice still has to pay
    (all of it once the invoice is paid or void) is a late charge: with LATE_CHARGE_POLICY=refund a
    GatewayRefund row is written here (pending, its own idempotency key, one per attempt) and sent
    by process_refund after the commit; with ``hold`` the money is applied as before (fees, then
    customer credit) and the caller flags it for staff. None: the invoice takes the whole amount.
    """
    invoice = attempt.invoice  # locked by settle_attempt, in this transaction
    if invoice.status in (Invoice.Status.OPEN, Invoice.Status.UNCOLLECTIBLE):
        excess = max(attempt.amount - invoice.amount_remaining, Decimal("0"))
    else:
        excess = attempt.amount
    if excess <= 0:
        return None
    policy = settings.LATE_CHARGE_POLICY
    refund = None
    if policy == "refund":
        refund, _created = GatewayRefund.objects.get_or_create(
            idempotency_key=f"late-refund:{attempt.pk}",
            defaults={"attempt": attempt, "invoice": invoice, "amount": excess, "currency": attempt.currency,
                      "gateway": attempt.gateway or get_gateway().name, "created_at": at or timezone.now(),
                      "lease_until": at or timezone.now(),
                      "reason": f"Charged after the invoice was {invoice.get_status_display().lower()}"},
        )
    return LateCharge(excess, policy, invoice.status, refund)


def claim_refund(refund_id: int, *, now: datetime | None = None) -> GatewayRefund | None:
    """Claim a pending refund for one gateway call (conditional update: exactly one row, or None)."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.PAYMENT_ATTEMPT_LEASE_SECONDS)
    claimed = GatewayRefund.objects.filter(
        pk=refund_id, status=GatewayRefund.Status.PENDING, lease_until__lte=now
    ).update(tries=F("tries") + 1, lease_until=now + lease)
    if claimed != 1:
        return None
    return GatewayRefund.objects.select_related("attempt", "invoice").get(pk=refund_id)


def pending_refund_ids(now: datetime | None = None, limit: int = 100) -> list[int]:
    return list(
        GatewayRefund.objects.filter(status=GatewayRefund.Status.PENDING, lease_until__lte=now or timezone.now())
        .order_by("lease_until").values_list("pk", flat=True)[:limit]
    )


def call_refund(refund: GatewayRefund) -> RefundResult:
    """Send a claimed refund to the gateway, outside any lock; OutcomeUnknown propagates."""
    gateway = get_gateway_by_name(refund.gateway) if refund.gateway else get_gateway()
    request = RefundRequest(
        charge_reference=refund.attempt.gateway_reference, amount=refund.amount, currency=refund.currency,
        idempotency_key=refund.idempotency_key, reason=refund.reason,
        metadata={"invoice": refund.invoice.external_id, "attempt": str(refund.attempt_id), "refund": str(refund.pk)},
    )
    try:
        return gateway.refund(request)
    except OutcomeUnknown:
        raise
    except GatewayError as exc:
        return RefundResult(False, message=str(exc)[:255])


def settle_refund(refund_id: int, result: RefundResult, *, at: datetime | None = None) -> GatewayRefund | None:
    """Record the gateway's answer once. Returns the refund if this call settled it, else None."""
    at = at or timezone.now()
    with transaction.atomic():
        refund = GatewayRefund.objects.select_for_update().get(pk=refund_id)
        if refund.status != GatewayRefund.Status.PENDING:
            return None
        refund.status = GatewayRefund.Status.SUCCEEDED if result.succeeded else GatewayRefund.Status.FAILED
        refund.gateway_reference = result.reference or refund.gateway_reference
        refund.message = result.message[:255]
        refund.completed_at = at
        refund.save(update_fields=["status", "gateway_reference", "message", "completed_at"])
        return refund


def postpone_refund(refund: GatewayRefund, *, now: datetime | None = None) -> None:
    """No answer from the gateway: ask again later with the same key, with backoff."""
    now = now or timezone.now()
    delay = timedelta(seconds=min(60 * 2 ** max(refund.tries, 0), 6 * 3600))
    GatewayRefund.objects.filter(pk=refund.pk, status=GatewayRefund.Status.PENDING).update(lease_until=now + delay)
