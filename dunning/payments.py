"""Money for an invoice in dunning, and what its case does about it.

``payment_applied`` is the one reaction to a payment, whatever brought it: a charge the payment job
settled (billing.attempts hands each result to ``CaseSettlement``), a payment reported by a webhook,
the API or an import, or staff marking the case paid (``record_payment``). If nothing remains, the
open case is recovered at once: later steps never run, unsent messages and attempts are cancelled
and a suspended customer is reinstated. Staff's retry and the retry after a new payment method charge
through billing.attempts with the same settlement.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from billing import attempts
from billing import services as billing
from billing.attempts import LateCharge, Settled
from billing.models import GatewayRefund, Invoice, PaymentAttempt
from billing.money import to_amount
from customers.models import Customer, PaymentMethod
from dunning import retries
from dunning.cases import close, last_case, lock_case, lock_open_case, log_cancelled_attempts, reinstate_if_clear
from dunning.errors import DunningError
from dunning.models import DunningCase, WorkItem, case_key
from dunning.timeline import EventKind, log
from dunning.webhook_events import case_payload
from dunning.workqueue import create_work_item
from notifications import webhooks

# An attempt charged inline by the calling request is leased so the background processor leaves it alone.
INLINE_LEASE = timedelta(minutes=5)


# Sent by payment_applied, inside the payment's transaction, whenever an invoice is paid in full, by
# any path (gateway, webhook, API event, import, staff): arguments invoice, at, actor. dunning.receivers
# connects what must follow, such as closing payment-plan requests that still wait for approval.
invoice_paid = Signal()


def record_payment(
    invoice: Invoice,
    amount: Decimal,
    *,
    attempt: PaymentAttempt | None = None,
    actor=None,
    at: datetime | None = None,
) -> DunningCase | None:
    """Money arrived for an invoice outside the payment job: apply it, and react (payment_applied).
    Returns the open case it went to, if any."""
    at = at or timezone.now()
    with transaction.atomic(savepoint=False):  # no savepoint when nested: an error aborts it all anyway
        case = lock_open_case(invoice.pk)
        applied = billing.apply_payment(invoice.pk, amount, at=at)
        return payment_applied(case, applied, attempt=attempt, actor=actor, at=at)


def payment_applied(case: DunningCase | None, applied: billing.AppliedPayment, *, attempt: PaymentAttempt | None,
                    actor=None, at: datetime) -> DunningCase | None:
    """A payment was applied to the invoice (billing.apply_payment), in this transaction, with its open
    case (``case``) locked first. Paid in full: the case is recovered. Returns the case."""
    if case is None:
        # Paid after the campaign ended (exhausted or cancelled): still stop the consequences.
        last = last_case(applied.invoice.pk)
        if last is not None and applied.fully_paid:
            log(last, EventKind.PAYMENT_AFTER_CLOSE, f"Paid {applied.amount} {applied.invoice.currency} after the "
                f"case was {last.status}", actor=actor, at=at, attempt=attempt)
            log_cancelled_attempts(last, applied.cancelled_attempts, "invoice paid", at)
            reinstate_if_clear(last.customer_id, at, actor)
        if applied.fully_paid:
            invoice_paid.send(Invoice, invoice=applied.invoice, at=at, actor=actor)
        return None
    inv = case.invoice = applied.invoice  # the locked, just-paid row (for the payloads below)
    if applied.credited:
        log(case, EventKind.PAYMENT_CREDIT, f"Overpayment of {applied.credited} {inv.currency} kept as credit",
            actor=actor, at=at, attempt=attempt, payload={"credited": str(applied.credited)})
    if not applied.fully_paid:
        log(case, EventKind.PAYMENT_PARTIAL,
            f"Partial payment of {applied.amount} {inv.currency}; {inv.amount_remaining} remains",
            actor=actor, at=at, attempt=attempt,
            payload={"amount": str(applied.amount), "remaining": str(inv.amount_remaining)})
        return case
    # Kept on the case so the dashboard sums recovered revenue without joining invoices.
    case.recovered_amount = inv.amount_paid
    close(case, DunningCase.Status.RECOVERED, at, cancelled_attempts=applied.cancelled_attempts,
          also=["recovered_amount"])
    log(case, EventKind.CASE_RECOVERED, f"Paid {applied.amount} {inv.currency}", actor=actor, at=at, attempt=attempt,
        payload={"amount": str(applied.amount), "source": attempt.source if attempt else "unknown",
                 "last_step": case.current_step_id})
    webhooks.emit("payment.recovered", case_payload(case, amount=str(applied.amount)), case_key(case.pk, "recovered"))
    # The customer was read when this case was locked, so no step of this case can have
    # suspended them since: only a suspended customer needs the locked re-check.
    if case.customer.status == Customer.Status.SUSPENDED:
        reinstate_if_clear(case.customer_id, at, actor)
    invoice_paid.send(Invoice, invoice=inv, at=at, actor=actor)
    return case


# --- The settled result of a charge -----------------------------------------------------------------

class CaseSettlement(attempts.Settlement):
    """What a settled attempt does to the invoice's case (billing.attempts hands each result here).
    Pass ``SETTLEMENT`` to billing.attempts' job, ``process`` and ``settle``."""

    def lock(self, invoice_id: int) -> DunningCase | None:
        return lock_open_case(invoice_id)

    def settled(self, result: Settled, case: DunningCase | None) -> None:
        attempt, at = result.attempt, result.at
        if result.outcome == PaymentAttempt.Outcome.SUCCEEDED:
            if result.applied is not None:
                payment_applied(case, result.applied, attempt=attempt, at=at)
            if result.late is not None and (noted := case or last_case(attempt.invoice_id)) is not None:
                _log_late_charge(noted, attempt, result.late, at)
        elif result.outcome == PaymentAttempt.Outcome.FAILED:
            if case is not None:
                log(case, EventKind.PAYMENT_DECLINED, f"Declined: {attempt.decline_code}", at=at, attempt=attempt,
                    payload={"decline_code": attempt.decline_code, "advice_code": attempt.advice_code,
                             "decline_class": attempt.decline_class})
                retries.after_decline(case, attempt, at=at)
        elif (last := last_case(attempt.invoice_id)) is not None:
            if result.outcome == PaymentAttempt.Outcome.CANCELLED:
                log(last, EventKind.PAYMENT_ATTEMPTS_CANCELLED, f"Not charged: {result.reason}", at=at,
                    attempt=attempt, payload={"attempts": [attempt.pk], "reason": result.reason})
            else:
                log(last, EventKind.PAYMENT_OUTCOME_UNKNOWN,
                    f"No answer from the gateway; will ask again ({result.reason})", at=at, attempt=attempt)

    def refunded(self, refund: GatewayRefund, *, at: datetime, unknown: str = "") -> None:
        case = last_case(refund.invoice_id)
        if case is None:
            return
        if unknown:
            log(case, EventKind.PAYMENT_REFUND_UNKNOWN,
                f"No answer from the gateway on the refund; will ask again ({unknown})", at=at, attempt=refund.attempt)
            return
        money = f"{to_amount(refund.amount, refund.currency)} {refund.currency}"
        if refund.status == GatewayRefund.Status.SUCCEEDED:
            log(case, EventKind.PAYMENT_REFUNDED, f"Refunded {money} charged after the invoice closed", at=at,
                attempt=refund.attempt, payload={"refund": refund.pk, "reference": refund.gateway_reference})
            return
        log(case, EventKind.PAYMENT_REFUND_FAILED, f"Refund of {money} failed: {refund.message}", at=at,
            attempt=refund.attempt, payload={"refund": refund.pk})
        create_work_item(case.customer, WorkItem.Kind.LATE_CHARGE,
                         f"{case.customer.name}: refund of {money} failed ({case.invoice.number})",
                         body=f"The gateway refused the refund: {refund.message}. Refund it by hand.",
                         case=case, dedupe_key=f"late-refund-failed:{refund.pk}")


SETTLEMENT = CaseSettlement()


def _log_late_charge(case: DunningCase, attempt: PaymentAttempt, late: LateCharge, at: datetime) -> None:
    money = f"{to_amount(late.excess, attempt.currency)} {attempt.currency}"
    payload = {"amount": str(late.excess), "currency": attempt.currency, "invoice_status": late.invoice_status,
               "policy": late.policy}
    if late.refund is not None:
        log(case, EventKind.PAYMENT_LATE_CHARGE, f"Charged {money} after the invoice was {late.invoice_status}; "
            "refunding it", at=at, attempt=attempt, payload={**payload, "refund": late.refund.pk})
        return
    log(case, EventKind.PAYMENT_LATE_CHARGE_HELD, f"Charged {money} after the invoice was {late.invoice_status}; "
        "kept as credit for staff to decide", at=at, attempt=attempt, payload=payload)
    create_work_item(case.customer, WorkItem.Kind.LATE_CHARGE,
                     f"{case.customer.name}: charged {money} after {case.invoice.number} was {late.invoice_status}",
                     body="The charge is kept as customer credit (LATE_CHARGE_POLICY=hold): refund it or keep it.",
                     case=case, dedupe_key=f"late-charge:attempt:{attempt.pk}")


# --- Charges asked for by staff and customers -------------------------------------------------------

def retry_now(case: DunningCase, *, actor=None) -> PaymentAttempt:
    """Charge the invoice's balance now with the default payment method; returns the settled attempt."""
    with transaction.atomic():
        case = lock_case(case)
        if not case.is_open:
            raise DunningError(f"Case #{case.pk} is {case.status}; nothing to retry")
        method = case.customer.default_payment_method
        if method is None:
            raise DunningError(f"{case.customer} has no payment method on file")
        if refusal := retries.manual_retry_refusal(method):
            raise DunningError(refusal)
        attempt = billing.new_attempt(case.invoice, payment_method=method, source=PaymentAttempt.Source.MANUAL,
                                      idempotency_key=f"manual-{case.pk}-{uuid.uuid4().hex}")
        attempt.lease_until = timezone.now() + INLINE_LEASE  # this call processes it
        attempt.save()
        log(case, EventKind.PAYMENT_RETRY_REQUESTED, "Retry requested by staff", actor=actor, attempt=attempt)
    return attempts.process(attempt, SETTLEMENT)


def retry_after_method_update(customer: Customer, payment_method: PaymentMethod, *, actor=None,
                              source: str = PaymentAttempt.Source.PORTAL) -> list[PaymentAttempt]:
    """A new payment method: leave "needs a payment method" and charge every open invoice in dunning
    at once, once per method.

    The idempotency key names the method and the invoice, so a double submit or a repeated webhook
    never charges twice. Returns the settled attempts (one per open case).
    """
    retries.clear_needs_payment_method(payment_method, actor=actor)
    charged = []
    for case in DunningCase.objects.open().filter(customer=customer).select_related("invoice"):
        attempt = billing.new_attempt(
            case.invoice, payment_method=payment_method, source=source,
            idempotency_key=f"method-update:{payment_method.pk}:{case.invoice_id}",
        )
        attempt.lease_until = timezone.now() + INLINE_LEASE  # processed right here
        with transaction.atomic():
            saved, created = PaymentAttempt.objects.get_or_create(
                idempotency_key=attempt.idempotency_key,
                defaults={f.name: getattr(attempt, f.name) for f in PaymentAttempt._meta.concrete_fields
                          if f.name not in ("id", "idempotency_key")},
            )
            if created:
                log(case, EventKind.PAYMENT_RETRY_AFTER_METHOD_UPDATE, f"New payment method {payment_method}",
                    actor=actor, attempt=saved)
        charged.append(attempts.process(saved, SETTLEMENT) if created else saved)
    return charged
