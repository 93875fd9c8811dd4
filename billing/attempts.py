"""Payment attempts from claim to outcome: the payment job, and the refund of a late charge.

One attempt goes through ``claim_pending_attempts`` (a lease, so one worker has it), ``start_attempt``
(re-checked under lock and the try counted), the gateway call (``prepare_charge``/``send_charge``,
outside any lock, on a GatewayPool thread) and ``settle`` (the answer recorded exactly once; a
success applied to the invoice, or refunded when it came too late). What became of it is handed,
once, as a ``Settled`` to the caller's ``Settlement``: dunning.payments.CaseSettlement closes or
notes the invoice's case in the same transaction. Billing knows nothing of dunning: the settlement
is passed in by whoever runs the job.

Lock order, for every payment: the caller's rows first (the invoice's open case:
``Settlement.lock``), then the invoice, then the attempt.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.declines import classify_attempt
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
from billing.gateways.pool import GatewayPool
from billing.models import GatewayRefund, Invoice, PaymentAttempt
from billing.services import AppliedPayment, apply_payment, not_chargeable

# --- What the caller gets ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LateCharge:
    """The part of a successful attempt the invoice can no longer take, and what happens to it."""

    excess: Decimal
    policy: str  # "refund" or "hold" (settings.LATE_CHARGE_POLICY)
    invoice_status: str
    refund: GatewayRefund | None = None


@dataclass(frozen=True)
class Settled:
    """What became of one attempt: ``outcome`` is succeeded or failed (the gateway's answer, recorded),
    cancelled (never sent: the invoice no longer wants it; ``reason`` says why) or pending (no answer:
    asked again later with the same key; ``reason`` is the error)."""

    attempt: PaymentAttempt
    outcome: str
    at: datetime
    reason: str = ""
    # A success: what the invoice took (None when the whole amount goes back as a late refund).
    applied: AppliedPayment | None = None
    late: LateCharge | None = None


class Settlement:
    """The caller's part in settling attempts. This base does nothing; dunning.payments.CaseSettlement
    locks the invoice's open case and reacts on its timeline."""

    def lock(self, invoice_id: int):
        """In the transaction that records an answer, before the invoice is locked: lock the caller's
        rows that come first in the lock order. What it returns is passed back to ``settled``."""
        return None

    def settled(self, result: Settled, locked) -> None:
        """React to what became of an attempt, once. A recorded answer (succeeded, failed) arrives in
        the transaction that recorded it, after ``lock``; cancelled and pending ones after theirs."""

    def refunded(self, refund: GatewayRefund, *, at: datetime, unknown: str = "") -> None:
        """A late-charge refund was answered (in the transaction that recorded the answer), or got no
        answer (``unknown``: the error; it is asked again later)."""


# --- The payment job --------------------------------------------------------------------------------

def process_pending(settlement: Settlement, now: datetime | None = None, limit: int = 100) -> int:
    """Send pending attempts to the gateway, up to PAYMENT_GATEWAY_CONCURRENCY calls at once, then
    pending late-charge refunds; returns how many attempts were processed.

    The database work of every attempt (claim, re-check, settle) runs here, in this thread, on one
    connection; only the gateway calls go to the pool's threads, outside any lock. An attempt is
    re-checked and claimed (_begin) only when a pool slot is free for its call, so a payment
    arriving meanwhile still cancels it unsent; answers are settled as they arrive."""
    count = 0
    in_flight: dict = {}
    waiting: deque[PaymentAttempt] = deque()  # leased by this run, not yet begun
    with GatewayPool(get_gateway().name) as pool:
        while True:
            if not waiting:
                waiting.extend(claim_pending_attempts(now or timezone.now(), limit))
            while waiting and len(in_flight) < pool.size:
                begun = _begin(waiting.popleft(), settlement, now=now or timezone.now())
                if begun is None:
                    count += 1
                    continue
                claimed, call = begun
                in_flight[pool.submit(_answer, call)] = claimed
            if not in_flight:
                if not waiting:
                    process_refunds(settlement, now)
                    return count
                continue
            done, _pending = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in [f for f in in_flight if f in done]:  # in the order they were sent
                _finish(in_flight.pop(future), future.result(), settlement, now=now or timezone.now())
                count += 1


def process(attempt: PaymentAttempt, settlement: Settlement, *, now: datetime | None = None) -> PaymentAttempt:
    """Charge one attempt now, in the caller's thread (a staff retry, the portal's pay now): re-check
    and claim it, call the gateway outside any lock and settle the answer. An attempt the invoice no
    longer wants is cancelled, never sent. Returns the attempt as it ended."""
    now = now or timezone.now()
    begun = _begin(attempt, settlement, now=now)
    if begun is not None:
        claimed, call = begun
        _finish(claimed, _answer(call), settlement, now=now)
    attempt.refresh_from_db()
    return attempt


GatewayCall = ChargeRequest | ChargeResult  # a request to send, or the failure that keeps it from the gateway


def _begin(attempt: PaymentAttempt, settlement: Settlement, *,
           now: datetime) -> tuple[PaymentAttempt, GatewayCall] | None:
    """Database work before the call: re-check and claim the attempt, and build its request (or the
    failure that keeps it from the gateway). None: not to be charged (cancelled, and settled as
    such) or another worker has it."""
    started = start_attempt(attempt.pk, attempt.invoice_id, now=now)
    if started.attempt is None:
        if started.cancelled:
            settlement.settled(Settled(attempt, PaymentAttempt.Outcome.CANCELLED, now, reason=started.cancelled), None)
        return None
    return started.attempt, prepare_charge(started.attempt)


def _answer(call: GatewayCall) -> ChargeResult | OutcomeUnknown:
    """The gateway call (no database work; may run on a GatewayPool thread). An unknown outcome is
    returned, not raised, so that _finish records it."""
    if isinstance(call, ChargeResult):
        return call
    try:
        return send_charge(call)
    except OutcomeUnknown as exc:
        return exc


def _finish(attempt: PaymentAttempt, answer: ChargeResult | OutcomeUnknown, settlement: Settlement, *,
            now: datetime) -> None:
    """Database work after the call: settle the answer exactly once, or ask again later if unknown;
    a late charge's refund is sent at once, after the commit."""
    if isinstance(answer, OutcomeUnknown):
        postpone_unknown(attempt, now=now)
        settlement.settled(Settled(attempt, PaymentAttempt.Outcome.PENDING, now, reason=str(answer)), None)
        return
    settled = settle(attempt, answer, settlement, at=now)
    if settled is not None and settled.late is not None and settled.late.refund is not None:
        process_refund(settled.late.refund.pk, settlement, now=now)


# --- Claim and start ----------------------------------------------------------------------------------

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
        # The invoice, then the attempt, as apply_payment and settle lock: closing the invoice and
        # claiming its attempt serialize, and never deadlock.
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


# --- The call -------------------------------------------------------------------------------------------

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


def postpone_unknown(attempt: PaymentAttempt, *, now: datetime | None = None) -> None:
    """An attempt whose outcome is unknown is asked again later, with backoff, under the same key."""
    now = now or timezone.now()
    delay = timedelta(seconds=min(60 * 2 ** max(attempt.tries, 0), 6 * 3600))
    PaymentAttempt.objects.filter(pk=attempt.pk, outcome=PaymentAttempt.Outcome.PENDING).update(
        lease_until=now + delay
    )


# --- Recording the outcome ------------------------------------------------------------------------------

def settle(attempt: PaymentAttempt, result: ChargeResult, settlement: Settlement, *,
           at: datetime | None = None) -> Settled | None:
    """Record a gateway answer (from the call, or reported later by a webhook) exactly once, apply a
    success to the invoice, and hand the result to the settlement in the same transaction. None:
    the attempt was already settled.

    A success the invoice can no longer take (paid or voided meanwhile) follows LATE_CHARGE_POLICY:
    the excess is refunded through the gateway (a GatewayRefund written here, sent by process_refund
    after the commit) or kept, applied as customer credit, for staff to decide (``Settled.late``).
    """
    at = at or timezone.now()
    with transaction.atomic():
        locked = settlement.lock(attempt.invoice_id)
        recorded = _record(attempt.pk, attempt.invoice_id, result, at=at)
        if recorded is None:
            return None
        applied = late = None
        if recorded.outcome == PaymentAttempt.Outcome.SUCCEEDED:
            late = late_charge(recorded, at=at)
            amount = recorded.amount - late.excess if late and late.refund else recorded.amount
            if amount > 0:
                applied = apply_payment(recorded.invoice_id, amount, at=at)
        settled = Settled(recorded, recorded.outcome, at, applied=applied, late=late)
        settlement.settled(settled, locked)
    return settled


def _record(attempt_id: int, invoice_id: int, result: ChargeResult, *, at: datetime) -> PaymentAttempt | None:
    """Write the gateway's answer on a pending attempt, in the caller's transaction. Returns the
    attempt (its invoice the locked row), or None if it was already settled."""
    # Invoice first, then the attempt: the order start_attempt and apply_payment lock in. The
    # locked invoice rides on the attempt (late_charge and the settlement read it, fresh).
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


def late_charge(attempt: PaymentAttempt, *, at: datetime | None = None) -> LateCharge | None:
    """Inside the transaction that settles a successful attempt: how much of it came too late.

    The invoice is the one _record locked. Money beyond what the invoice still has to pay (all of it
    once the invoice is paid or void) is a late charge: with LATE_CHARGE_POLICY=refund a
    GatewayRefund row is written here (pending, its own idempotency key, one per attempt) and sent
    by process_refund after the commit; with ``hold`` the money is applied as before (fees, then
    customer credit) and the settlement flags it for staff. None: the invoice takes the whole amount.
    """
    invoice = attempt.invoice  # locked by _record, in this transaction
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


# --- Refunds of late charges ----------------------------------------------------------------------------

def process_refund(refund_id: int, settlement: Settlement, *, now: datetime | None = None) -> GatewayRefund | None:
    """Send one late-charge refund to the gateway (outside any lock) and record the answer, once."""
    now = now or timezone.now()
    refund = claim_refund(refund_id, now=now)
    if refund is None:
        return None  # another worker has it, or it is settled
    try:
        result = call_refund(refund)
    except OutcomeUnknown as exc:
        postpone_refund(refund, now=now)
        settlement.refunded(refund, at=now, unknown=str(exc))
        return refund
    with transaction.atomic():
        settled = settle_refund(refund.pk, result, at=now)
        if settled is not None:
            settlement.refunded(settled, at=now)
    refund.refresh_from_db()
    return refund


def process_refunds(settlement: Settlement, now: datetime | None = None, limit: int = 100) -> int:
    """Send pending late-charge refunds (left by a webhook, a crash or an unknown outcome)."""
    count = 0
    for refund_id in pending_refund_ids(now, limit):
        if process_refund(refund_id, settlement, now=now) is not None:
            count += 1
    return count


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
