"""Dunning operations: open and close cases, record payments, staff actions.

Admin actions, the API, imports, gateway webhooks and tasks all call these functions; none of them
holds business logic of its own. Every change leaves a CaseEvent with its actor.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from billing import services as billing
from billing.gateways import ChargeRequest, ChargeResult, OutcomeUnknown, get_gateway
from billing.gateways.pool import GatewayPool
from billing.models import GatewayRefund, Invoice, PaymentAttempt
from billing.money import to_amount
from customers.models import Customer, PaymentMethod
from dunning import retries
from dunning.models import Campaign, CampaignStep, CampaignVariant, CaseEvent, DunningCase, WorkItem
from dunning.webhook_events import case_payload, customer_payload
from notifications import services as outbox
from notifications import webhooks

logger = logging.getLogger(__name__)


# An attempt charged inline by the calling request is leased so the background processor leaves it alone.
INLINE_LEASE = timedelta(minutes=5)


# Sent by record_payment, inside the payment's transaction, whenever an invoice is paid in full, by any
# path (gateway, webhook, API event, import, staff): arguments invoice, at, actor. dunning.receivers
# connects what must follow, such as closing payment-plan requests that still wait for approval.
invoice_paid = Signal()


class DunningError(Exception):
    """A request that cannot be carried out; the message is shown to staff or API clients as is."""


class NoMatchingCampaign(DunningError):
    pass


class DunningExcluded(NoMatchingCampaign):
    """The invoice or its customer is excluded from dunning."""


def actor_fields(actor) -> dict:
    """CaseEvent actor columns for a user, a label such as 'api:key-name', or None (the system)."""
    if actor is None:
        return {"actor": None, "actor_label": "system"}
    if isinstance(actor, str):
        return {"actor": None, "actor_label": actor[:100]}
    return {"actor": actor, "actor_label": (actor.get_username() or str(actor.pk))[:100]}


def log(case: DunningCase, kind: str, message: str = "", *, actor=None, at: datetime | None = None,
        payload: dict | None = None, step: CampaignStep | None = None,
        attempt: PaymentAttempt | None = None) -> CaseEvent:
    return CaseEvent.objects.create(
        case=case, kind=kind, message=message[:255], at=at or timezone.now(), payload=payload or {},
        step=step, attempt=attempt, **actor_fields(actor),
    )


def case_reference(case_id: int) -> str:
    return f"case:{case_id}"


# --- Opening ----------------------------------------------------------------------------------

def select_campaign(invoice: Invoice) -> Campaign:
    """Exclusions, pins, then the first matching active campaign (rules in dunning.targeting)."""
    from dunning import targeting

    return targeting.select_campaign(invoice)


@dataclass
class FailedPayment:
    """One payment failure to open a case for (see open_cases)."""

    invoice_id: int
    failed_at: datetime | None = None
    decline_code: str = ""
    attempt: PaymentAttempt | None = None
    # Fields of a failed PaymentAttempt to record with the case (amount and currency come from the
    # invoice); it is written only when the failure is accepted.
    record_attempt: dict | None = None
    campaign: Campaign | None = None


@dataclass
class Opened:
    """What open_cases() did for one FailedPayment: a case (new or the open one), or the error."""

    case: DunningCase | None = None
    created: bool = False
    error: DunningError | None = None
    attempt: PaymentAttempt | None = None


def open_case(
    invoice: Invoice,
    *,
    failed_at: datetime | None = None,
    decline_code: str = "",
    attempt: PaymentAttempt | None = None,
    actor=None,
    campaign: Campaign | None = None,
) -> tuple[DunningCase, bool]:
    """A payment failed: open a case (or note the failure on the open one). Returns (case, created).

    Raises DunningError, writing nothing, when the invoice is not open or no usable campaign matches.
    """
    [opened] = open_cases([FailedPayment(invoice.pk, failed_at, decline_code, attempt, campaign=campaign)],
                          actor=actor)
    if opened.error is not None:
        raise opened.error
    return opened.case, opened.created


def open_cases(failures: list[FailedPayment], *, actor=None) -> list[Opened]:
    """Payments failed: open a case for each invoice, or note the failure on its open case.

    The same rules as one at a time (open invoice with something left to pay; exclusions, pins,
    campaign rules, A/B variants; a campaign needs steps), with a fixed number of queries for any
    number of failures. The invoices are locked in id order, so a concurrent payment or a second
    failure of the same invoice waits and then sees this one. A failure that breaks a rule gets its
    error in the result and writes nothing; the others are written.
    """
    now = timezone.now()
    results = [Opened() for _ in failures]
    if not failures:
        return results
    from dunning.targeting import Targeting, assign_variant, load_variants

    with transaction.atomic():
        ids = sorted({f.invoice_id for f in failures})
        invoices = {i.pk: i for i in Invoice.objects.select_for_update(of=("self",)).select_related("customer")
                    .filter(pk__in=ids).order_by("pk")}
        open_by_invoice = {c.invoice_id: c for c in DunningCase.objects.open().filter(invoice_id__in=ids)}
        new_invoices = [invoices[i] for i in ids if i in invoices and i not in open_by_invoice]
        targeting = Targeting(new_invoices) if any(f.campaign is None for f in failures) else None

        # Decide in memory. Several failures of one invoice in the batch: the first opens, the rest note.
        plans: dict[int, tuple[Campaign, CampaignVariant | None]] = {}
        for k, failure in enumerate(failures):
            invoice = invoices.get(failure.invoice_id)
            if invoice is None:
                results[k].error = DunningError(f"No invoice with id {failure.invoice_id}")
                continue
            if invoice.pk in open_by_invoice or invoice.pk in plans:
                continue
            try:
                if invoice.status != Invoice.Status.OPEN:
                    raise DunningError(f"Invoice {invoice.number} is {invoice.get_status_display().lower()}, "
                                       "not open")
                if invoice.amount_remaining <= 0:
                    raise DunningError(f"Invoice {invoice.number} has nothing left to pay")
                plans[invoice.pk] = (failure.campaign or targeting.select(invoice), None)
            except DunningError as exc:
                results[k].error = exc
        variants = load_variants(c.pk for c, _v in plans.values())
        for invoice_id, (campaign, _v) in plans.items():
            plans[invoice_id] = assign_variant(campaign, invoices[invoice_id], variants.get(campaign.pk, []))
        steps: dict[int, list[CampaignStep]] = {}
        for step in CampaignStep.objects.filter(campaign_id__in={c.pk for c, _v in plans.values()}).order_by(
                "campaign_id", "position"):
            steps.setdefault(step.campaign_id, []).append(step)
        for k, failure in enumerate(failures):
            plan = plans.get(failure.invoice_id)
            if plan is not None and not steps.get(plan[0].pk) and results[k].error is None:
                results[k].error = DunningError(f"Campaign {plan[0].name!r} has no steps; add steps before it can run")
        for invoice_id in [i for i, (c, _v) in plans.items() if not steps.get(c.pk)]:
            del plans[invoice_id]

        # Write: attempts, new cases, then one timeline row per failure.
        accepted = [k for k, r in enumerate(results) if r.error is None]
        new_attempts = []
        for k in accepted:
            failure, invoice = failures[k], invoices[failures[k].invoice_id]
            results[k].attempt = failure.attempt
            if failure.record_attempt is not None:
                results[k].attempt = PaymentAttempt(invoice=invoice, amount=invoice.amount_remaining,
                                                    currency=invoice.currency, **failure.record_attempt)
                new_attempts.append(results[k].attempt)
        PaymentAttempt.objects.bulk_create(new_attempts)
        created: dict[int, DunningCase] = {}
        for k in accepted:
            failure = failures[k]
            if failure.invoice_id in plans and failure.invoice_id not in created:
                campaign, variant = plans[failure.invoice_id]
                first, failed_at = steps[campaign.pk][0], failure.failed_at or now
                invoice = invoices[failure.invoice_id]
                created[failure.invoice_id] = DunningCase(
                    invoice=invoice, customer=invoice.customer, campaign=campaign, failed_at=failed_at,
                    decline_code=failure.decline_code, next_step=first, next_action_at=failed_at + first.offset,
                    variant=variant, currency=invoice.currency)
                results[k].created = True
        DunningCase.objects.bulk_create(created.values())
        events, webhook_events = [], []
        for k in accepted:
            failure, result = failures[k], results[k]
            code = failure.decline_code or "no code"
            at = failure.failed_at or now
            if result.created:
                case = result.case = created[failure.invoice_id]
                invoice = invoices[failure.invoice_id]
                message = f"Payment failed ({code}); campaign {case.campaign.name}"
                events.append(CaseEvent(
                    case=case, kind="case.opened", message=message[:255], at=at, attempt=result.attempt,
                    **actor_fields(actor),
                    payload={"campaign": case.campaign_id, "variant": case.variant_id,
                             "decline_code": failure.decline_code, "amount": str(invoice.amount_remaining),
                             "currency": invoice.currency}))
                webhook_events.append(("case.opened", case, f"case:{case.pk}:opened"))
            else:
                result.case = open_by_invoice.get(failure.invoice_id) or created[failure.invoice_id]
                events.append(CaseEvent(
                    case=result.case, kind="payment.failed", message=f"Payment failed again ({code})"[:255], at=at,
                    attempt=result.attempt, payload={"decline_code": failure.decline_code}, **actor_fields(actor)))
        CaseEvent.objects.bulk_create(events)
        if webhook_events and webhooks.has_endpoints():
            webhooks.emit_many([(kind, case_payload(case), key) for kind, case, key in webhook_events])
    for k, failure in enumerate(failures):
        result = results[k]
        if result.created and (failure.decline_code or result.attempt is not None):
            # A hard decline stops retries at once (one query only for such declines).
            retries.after_decline(result.case, result.attempt, at=failure.failed_at or now)
    return results


# --- Payments -----------------------------------------------------------------------------------

def record_payment(
    invoice: Invoice,
    amount: Decimal,
    *,
    attempt: PaymentAttempt | None = None,
    actor=None,
    at: datetime | None = None,
) -> DunningCase | None:
    """Money arrived for an invoice. If nothing remains, its open case is recovered at once: later
    steps never run, unsent messages are cancelled and a suspended customer is reinstated."""
    at = at or timezone.now()
    with transaction.atomic(savepoint=False):  # no savepoint when nested: an error aborts it all anyway
        case = lock_open_case(invoice.pk)
        applied = billing.apply_payment(invoice.pk, amount, at=at)
        if case is None:
            # Paid after the campaign ended (exhausted or cancelled): still stop the consequences.
            last = DunningCase.objects.filter(invoice_id=invoice.pk).order_by("-id").first()
            if last is not None and applied.fully_paid:
                log(last, "payment.after_close", f"Paid {applied.amount} {applied.invoice.currency} after the case "
                    f"was {last.status}", actor=actor, at=at, attempt=attempt)
                _log_cancelled_attempts(last, applied.cancelled_attempts, "invoice paid", at)
                _reinstate_if_clear(last.customer_id, at, actor)
            if applied.fully_paid:
                invoice_paid.send(Invoice, invoice=applied.invoice, at=at, actor=actor)
            return None
        inv = case.invoice = applied.invoice  # the locked, just-paid row (for the payloads below)
        if applied.credited:
            log(case, "payment.credit", f"Overpayment of {applied.credited} {inv.currency} kept as credit",
                actor=actor, at=at, attempt=attempt, payload={"credited": str(applied.credited)})
        if not applied.fully_paid:
            log(case, "payment.partial",
                f"Partial payment of {applied.amount} {inv.currency}; {inv.amount_remaining} remains",
                actor=actor, at=at, attempt=attempt,
                payload={"amount": str(applied.amount), "remaining": str(inv.amount_remaining)})
            return case
        # Kept on the case so the dashboard sums recovered revenue without joining invoices.
        case.recovered_amount = inv.amount_paid
        _close(case, DunningCase.Status.RECOVERED, at, cancelled_attempts=applied.cancelled_attempts,
               also=["recovered_amount"])
        log(case, "case.recovered", f"Paid {applied.amount} {inv.currency}", actor=actor, at=at, attempt=attempt,
            payload={"amount": str(applied.amount), "source": attempt.source if attempt else "unknown",
                     "last_step": case.current_step_id})
        webhooks.emit("payment.recovered", case_payload(case, amount=str(applied.amount)), f"case:{case.pk}:recovered")
        # The customer was read when this case was locked, so no step of this case can have
        # suspended them since: only a suspended customer needs the locked re-check.
        if case.customer.status == Customer.Status.SUSPENDED:
            _reinstate_if_clear(case.customer_id, at, actor)
        invoice_paid.send(Invoice, invoice=inv, at=at, actor=actor)
    return case


def _close(case: DunningCase, status: str, at: datetime, *, cancelled_attempts=None, also=()) -> None:
    """Close an open case in the caller's transaction: its unsent messages and its unsent payment
    attempts are cancelled with it (``cancelled_attempts``: those the payment closing it cancelled).
    ``also``: other fields the caller set on the case, saved with it."""
    case.status = status
    case.closed_at = at
    case.next_action_at = None
    case.next_step = None
    case.save(update_fields=["status", "closed_at", "next_action_at", "next_step", "updated_at", *also])
    cancelled = outbox.cancel_queued(case_reference(case.pk), reason=f"case {status}")
    if cancelled:
        log(case, "messages.cancelled", f"{cancelled} unsent message(s) cancelled", at=at,
            payload={"count": cancelled})
    if cancelled_attempts is None:
        reason = f"case {status}"
        cancelled_attempts = billing.cancel_unsent_attempts([case.invoice_id], reason=reason, at=at)
    else:
        reason = "invoice paid"
    _log_cancelled_attempts(case, cancelled_attempts, reason, at)


def _log_cancelled_attempts(case: DunningCase, attempt_ids, reason: str, at: datetime) -> None:
    if attempt_ids:
        ids = sorted(attempt_ids)
        log(case, "payment.attempts_cancelled", f"{len(ids)} pending payment attempt(s) cancelled ({reason})",
            at=at, payload={"attempts": ids, "reason": reason})


def _reinstate_if_clear(customer_id: int, at: datetime, actor) -> None:
    """Reinstate a suspended customer once no open case of theirs has reached suspension."""
    customer = Customer.objects.select_for_update().get(pk=customer_id)
    if customer.status != Customer.Status.SUSPENDED:
        return
    # Another invoice that led to suspension and is still unpaid keeps the service suspended.
    still_suspending = (
        DunningCase.objects.filter(customer_id=customer_id, events__kind="customer.suspended")
        .exclude(status=DunningCase.Status.RECOVERED)
        .exclude(status=DunningCase.Status.CANCELLED)
        .filter(invoice__status__in=[Invoice.Status.OPEN, Invoice.Status.UNCOLLECTIBLE])
        .exists()
    )
    if still_suspending:
        return
    customer.status = Customer.Status.ACTIVE
    customer.suspended_at = None
    customer.save(update_fields=["status", "suspended_at", "updated_at"])
    webhooks.emit("customer.reinstated", {"customer": customer_payload(customer)},
                  f"customer:{customer_id}:reinstated:{at.isoformat()}")
    for case in DunningCase.objects.filter(customer_id=customer_id).order_by("-closed_at")[:1]:
        log(case, "customer.reinstated", "Service reinstated", actor=actor, at=at)


def settle_attempt(attempt: PaymentAttempt, result, *, at: datetime | None = None) -> PaymentAttempt | None:
    """Record a gateway answer and its consequence for the case, exactly once.

    A success the invoice can no longer take (paid or voided meanwhile) follows LATE_CHARGE_POLICY:
    the excess is refunded through the gateway (a GatewayRefund written here, sent by process_refund
    after the commit) or held as credit with a work item for staff; either way the timeline says so.
    The settled attempt's ``late_refund`` is that GatewayRefund (None when there is none).
    """
    at = at or timezone.now()
    with transaction.atomic():
        case = lock_open_case(attempt.invoice_id)
        settled = billing.settle_attempt(attempt.pk, attempt.invoice_id, result, at=at)
        if settled is None:
            return None
        settled.late_refund = None
        case = case or DunningCase.objects.filter(invoice_id=settled.invoice_id).order_by("-id").first()
        if settled.outcome == PaymentAttempt.Outcome.SUCCEEDED:
            late = billing.late_charge(settled, at=at)
            amount = settled.amount - late.excess if late and late.refund else settled.amount
            if amount > 0:
                record_payment(settled.invoice, amount, attempt=settled, at=at)
            if late is not None and case is not None:
                _log_late_charge(case, settled, late, at)
            settled.late_refund = late.refund if late is not None else None
        elif case is not None and case.is_open:
            log(case, "payment.declined", f"Declined: {settled.decline_code}", at=at, attempt=settled,
                payload={"decline_code": settled.decline_code, "advice_code": settled.advice_code,
                         "decline_class": settled.decline_class})
            retries.after_decline(case, settled, at=at)
    return settled


def _log_late_charge(case: DunningCase, attempt: PaymentAttempt, late: billing.LateCharge, at: datetime) -> None:
    money = f"{to_amount(late.excess, attempt.currency)} {attempt.currency}"
    payload = {"amount": str(late.excess), "currency": attempt.currency, "invoice_status": late.invoice_status,
               "policy": late.policy}
    if late.refund is not None:
        log(case, "payment.late_charge", f"Charged {money} after the invoice was {late.invoice_status}; "
            "refunding it", at=at, attempt=attempt, payload={**payload, "refund": late.refund.pk})
        return
    log(case, "payment.late_charge_held", f"Charged {money} after the invoice was {late.invoice_status}; "
        "kept as credit for staff to decide", at=at, attempt=attempt, payload=payload)
    create_work_item(case.customer, WorkItem.Kind.LATE_CHARGE,
                     f"{case.customer.name}: charged {money} after {case.invoice.number} was {late.invoice_status}",
                     body="The charge is kept as customer credit (LATE_CHARGE_POLICY=hold): refund it or keep it.",
                     case=case, dedupe_key=f"late-charge:attempt:{attempt.pk}")


def process_refund(refund_id: int, *, now: datetime | None = None) -> GatewayRefund | None:
    """Send one late-charge refund to the gateway (outside any lock) and record the answer, once."""
    now = now or timezone.now()
    refund = billing.claim_refund(refund_id, now=now)
    if refund is None:
        return None  # another worker has it, or it is settled
    case = DunningCase.objects.filter(invoice_id=refund.invoice_id).order_by("-id").first()
    try:
        result = billing.call_refund(refund)
    except OutcomeUnknown as exc:
        billing.postpone_refund(refund, now=now)
        if case is not None:
            log(case, "payment.refund_unknown", f"No answer from the gateway on the refund; will ask again ({exc})",
                at=now, attempt=refund.attempt)
        return refund
    with transaction.atomic():
        settled = billing.settle_refund(refund.pk, result, at=now)
        if settled is not None and case is not None:
            money = f"{to_amount(settled.amount, settled.currency)} {settled.currency}"
            if settled.status == GatewayRefund.Status.SUCCEEDED:
                log(case, "payment.refunded", f"Refunded {money} charged after the invoice closed", at=now,
                    attempt=settled.attempt, payload={"refund": settled.pk, "reference": settled.gateway_reference})
            else:
                log(case, "payment.refund_failed", f"Refund of {money} failed: {settled.message}", at=now,
                    attempt=settled.attempt, payload={"refund": settled.pk})
                create_work_item(case.customer, WorkItem.Kind.LATE_CHARGE,
                                 f"{case.customer.name}: refund of {money} failed ({case.invoice.number})",
                                 body=f"The gateway refused the refund: {settled.message}. Refund it by hand.",
                                 case=case, dedupe_key=f"late-refund-failed:{settled.pk}")
    refund.refresh_from_db()
    return refund


def process_refunds(now: datetime | None = None, limit: int = 100) -> int:
    """Send pending late-charge refunds (left by a webhook, a crash or an unknown outcome)."""
    count = 0
    for refund_id in billing.pending_refund_ids(now, limit):
        if process_refund(refund_id, now=now) is not None:
            count += 1
    return count


def process_attempt(attempt: PaymentAttempt, *, now: datetime | None = None) -> PaymentAttempt:
    """Re-check and claim one attempt (billing.start_attempt), call the gateway outside any lock and
    settle the answer. An attempt the invoice no longer wants is cancelled, never sent."""
    now = now or timezone.now()
    begun = begin_attempt(attempt, now=now)
    if begun is not None:
        claimed, call = begun
        finish_attempt(claimed, gateway_answer(call), now=now)
    attempt.refresh_from_db()
    return attempt


GatewayCall = ChargeRequest | ChargeResult  # a request to send, or the failure that keeps it from the gateway


def begin_attempt(attempt: PaymentAttempt, *, now: datetime) -> tuple[PaymentAttempt, GatewayCall] | None:
    """Database work before the call: re-check and claim the attempt, and build its request (or the
    failure that keeps it from the gateway). None: not to be charged (cancelled, on the timeline) or
    another worker has it."""
    started = billing.start_attempt(attempt.pk, attempt.invoice_id, now=now)
    if started.attempt is None:
        if started.cancelled:
            case = DunningCase.objects.filter(invoice_id=attempt.invoice_id).order_by("-id").first()
            if case is not None:
                log(case, "payment.attempts_cancelled", f"Not charged: {started.cancelled}", at=now,
                    attempt=attempt, payload={"attempts": [attempt.pk], "reason": started.cancelled})
        return None
    return started.attempt, billing.prepare_charge(started.attempt)


def gateway_answer(call: GatewayCall) -> ChargeResult | OutcomeUnknown:
    """The gateway call (no database work; may run on a GatewayPool thread). An unknown outcome is
    returned, not raised, so that finish_attempt records it."""
    if isinstance(call, ChargeResult):
        return call
    try:
        return billing.send_charge(call)
    except OutcomeUnknown as exc:
        return exc


def finish_attempt(attempt: PaymentAttempt, answer: ChargeResult | OutcomeUnknown, *, now: datetime) -> None:
    """Database work after the call: settle the answer exactly once, or ask again later if unknown."""
    if isinstance(answer, OutcomeUnknown):
        billing.postpone_unknown(attempt, now=now)
        case = DunningCase.objects.filter(invoice_id=attempt.invoice_id).order_by("-id").first()
        if case is not None:
            log(case, "payment.outcome_unknown", f"No answer from the gateway; will ask again ({answer})",
                at=now, attempt=attempt)
        return
    settled = settle_attempt(attempt, answer, at=now)
    if settled is not None and settled.late_refund is not None:
        process_refund(settled.late_refund.pk, now=now)


def process_payment_attempts(now: datetime | None = None, limit: int = 100) -> int:
    """Send pending attempts to the gateway, up to PAYMENT_GATEWAY_CONCURRENCY calls at once, then
    pending late-charge refunds; returns how many attempts were processed.

    The database work of every attempt (claim, re-check, settle) runs here, in this thread, on one
    connection; only the gateway calls go to the pool's threads, outside any lock. An attempt is
    re-checked and claimed (begin_attempt) only when a pool slot is free for its call, so a payment
    arriving meanwhile still cancels it unsent; answers are settled as they arrive."""
    count = 0
    in_flight: dict = {}
    waiting: deque[PaymentAttempt] = deque()  # leased by this run, not yet begun
    with GatewayPool(get_gateway().name) as pool:
        while True:
            if not waiting:
                waiting.extend(billing.claim_pending_attempts(now or timezone.now(), limit))
            while waiting and len(in_flight) < pool.size:
                begun = begin_attempt(waiting.popleft(), now=now or timezone.now())
                if begun is None:
                    count += 1
                    continue
                claimed, call = begun
                in_flight[pool.submit(gateway_answer, call)] = claimed
            if not in_flight:
                if not waiting:
                    process_refunds(now)
                    return count
                continue
            done, _pending = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in [f for f in in_flight if f in done]:  # in the order they were sent
                finish_attempt(in_flight.pop(future), future.result(), now=now or timezone.now())
                count += 1


# --- Staff actions ------------------------------------------------------------------------------

def lock_open_case(invoice_id: int) -> DunningCase | None:
    """Lock the invoice's open case, if any, before its invoice and attempts are locked.

    The lock order is case, then invoice, then attempt: the engine holds its claimed cases while it
    writes their invoices, so a payment that locked the invoice first and then waited for the case
    would deadlock with it. FOR NO KEY UPDATE, so that timeline rows pointing at the case (a foreign
    key check takes a key-share lock) are never blocked by it.
    """
    return (DunningCase.objects.select_for_update(no_key=True, of=("self",)).select_related("customer")
            .filter(invoice_id=invoice_id, status__in=DunningCase.OPEN_STATUSES).first())


def _locked_case(case: DunningCase) -> DunningCase:
    # Only the case row (of=self; a join would lock the invoice and the customer too, out of order).
    return (DunningCase.objects.select_for_update(of=("self",), no_key=True)
            .select_related("invoice", "customer").get(pk=case.pk))


def pause_case(case: DunningCase, *, actor=None, reason: str = "") -> DunningCase:
    with transaction.atomic():
        case = _locked_case(case)
        if case.status != DunningCase.Status.ACTIVE:
            raise DunningError(f"Case #{case.pk} is {case.status}; only active cases can be paused")
        case.status = DunningCase.Status.PAUSED
        case.paused_at = timezone.now()
        case.save(update_fields=["status", "paused_at", "updated_at"])
        log(case, "case.paused", reason or "Paused", actor=actor)
    return case


def resume_case(case: DunningCase, *, actor=None) -> DunningCase:
    """Resume a paused case. Steps whose time passed while paused run now, in order."""
    with transaction.atomic():
        case = _locked_case(case)
        if case.status != DunningCase.Status.PAUSED:
            raise DunningError(f"Case #{case.pk} is {case.status}; only paused cases can be resumed")
        now = timezone.now()
        case.status = DunningCase.Status.ACTIVE
        case.paused_at = None
        if case.next_action_at is not None and case.next_action_at < now:
            case.next_action_at = now
        case.save(update_fields=["status", "paused_at", "next_action_at", "updated_at"])
        log(case, "case.resumed", "Resumed", actor=actor)
    return case


def cancel_case(case: DunningCase, *, actor=None, reason: str = "") -> DunningCase:
    with transaction.atomic():
        case = _locked_case(case)
        if not case.is_open:
            raise DunningError(f"Case #{case.pk} is already {case.status}")
        now = timezone.now()
        _close(case, DunningCase.Status.CANCELLED, now)
        log(case, "case.cancelled", reason or "Cancelled", actor=actor, at=now)
        _reinstate_if_clear(case.customer_id, now, actor)
    return case


def retry_now(case: DunningCase, *, actor=None) -> PaymentAttempt:
    """Charge the invoice's balance now with the default payment method; returns the settled attempt."""
    with transaction.atomic():
        case = _locked_case(case)
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
        log(case, "payment.retry_requested", "Retry requested by staff", actor=actor, attempt=attempt)
    return process_attempt(attempt)


def retry_after_method_update(customer: Customer, payment_method: PaymentMethod, *, actor=None,
                              source: str = PaymentAttempt.Source.PORTAL) -> list[PaymentAttempt]:
    """A new payment method: charge every open invoice in dunning at once, once per method.

    The idempotency key names the method and the invoice, so a double submit or a repeated webhook
    never charges twice. Returns the settled attempts (one per open case).
    """
    retries.clear_needs_payment_method(payment_method, actor=actor)
    attempts = []
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
                log(case, "payment.retry_after_method_update", f"New payment method {payment_method}",
                    actor=actor, attempt=saved)
        attempts.append(process_attempt(saved) if created else saved)
    return attempts


def create_work_item(customer: Customer, kind: str, title: str, *, body: str = "", case: DunningCase | None = None,
                     actor=None, dedupe_key: str | None = None,
                     at: datetime | None = None) -> tuple[WorkItem, bool]:
    """Put something in the staff work queue (and on the case timeline). Deduplicated by key.
    ``at``: when it arose (the caller's clock), by default now."""
    at = at or timezone.now()
    fields = {"customer": customer, "kind": kind, "title": title[:200], "body": body, "case": case, "created_at": at}
    with transaction.atomic():
        if dedupe_key:
            item, created = WorkItem.objects.get_or_create(dedupe_key=dedupe_key, defaults=fields)
        else:
            item, created = WorkItem.objects.create(**fields), True
        if created and case is not None:
            log(case, "workitem.created", f"{item.get_kind_display()}: {title}", actor=actor, at=at,
                payload={"work_item": item.pk, "kind": kind})
    return item, created
