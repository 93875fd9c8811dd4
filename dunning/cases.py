"""Every change of a case's status: open, advance (the engine), pause, resume, cancel, close; and
the customer's suspension and reinstatement that follow the cases.

Admin actions, the API, imports, gateway webhooks and tasks call these; each change lands on the
case's timeline with its actor. Payments that close a case are in dunning.payments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from customers.models import Customer
from dunning import retries
from dunning.errors import DunningError
from dunning.models import Campaign, CampaignStep, CampaignVariant, DunningCase, case_key
from dunning.timeline import EventKind, entry, log, log_entries
from dunning.webhook_events import case_payload, customer_payload
from notifications import services as outbox
from notifications import webhooks

# --- Locks ----------------------------------------------------------------------------------------

def lock_open_case(invoice_id: int) -> DunningCase | None:
    """Lock the invoice's open case, if any, before its invoice and attempts are locked.

    The lock order is case, then invoice, then attempt: the engine holds its claimed cases while it
    writes their invoices, so a payment that locked the invoice first and then waited for the case
    would deadlock with it. FOR NO KEY UPDATE, so that timeline rows pointing at the case (a foreign
    key check takes a key-share lock) are never blocked by it.
    """
    return (DunningCase.objects.select_for_update(no_key=True, of=("self",)).select_related("customer")
            .filter(invoice_id=invoice_id, status__in=DunningCase.OPEN_STATUSES).first())


def lock_case(case: DunningCase) -> DunningCase:
    """The case re-read under lock (a staff action), with its invoice and customer."""
    # Only the case row (of=self; a join would lock the invoice and the customer too, out of order).
    return (DunningCase.objects.select_for_update(of=("self",), no_key=True)
            .select_related("invoice", "customer").get(pk=case.pk))


def last_case(invoice_id: int) -> DunningCase | None:
    """The invoice's most recent case, open or closed (where a late event about it is noted)."""
    return DunningCase.objects.filter(invoice_id=invoice_id).order_by("-id").first()


# --- Opening --------------------------------------------------------------------------------------

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
    with transaction.atomic():
        ids = sorted({f.invoice_id for f in failures})
        invoices = {i.pk: i for i in Invoice.objects.select_for_update(of=("self",)).select_related("customer")
                    .filter(pk__in=ids).order_by("pk")}
        open_by_invoice = {c.invoice_id: c for c in DunningCase.objects.open().filter(invoice_id__in=ids)}
        new_invoices = [invoices[i] for i in ids if i in invoices and i not in open_by_invoice]
        targeting = Campaign.objects.targeting(new_invoices) if any(f.campaign is None for f in failures) else None

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
        variants = CampaignVariant.objects.by_experiment(c.pk for c, _v in plans.values())
        for invoice_id, (campaign, _v) in plans.items():
            plans[invoice_id] = campaign.assign_variant(invoices[invoice_id], variants.get(campaign.pk, []))
        steps = CampaignStep.objects.by_campaign(c.pk for c, _v in plans.values())
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
            attempt_id = result.attempt.pk if result.attempt is not None else None
            if result.created:
                case = result.case = created[failure.invoice_id]
                invoice = invoices[failure.invoice_id]
                events.append(entry(
                    case.pk, EventKind.CASE_OPENED, f"Payment failed ({code}); campaign {case.campaign.name}", at=at,
                    actor=actor, attempt_id=attempt_id,
                    payload={"campaign": case.campaign_id, "variant": case.variant_id,
                             "decline_code": failure.decline_code, "amount": str(invoice.amount_remaining),
                             "currency": invoice.currency}))
                webhook_events.append(("case.opened", case, case_key(case.pk, "opened")))
            else:
                result.case = open_by_invoice.get(failure.invoice_id) or created[failure.invoice_id]
                events.append(entry(result.case.pk, EventKind.PAYMENT_FAILED, f"Payment failed again ({code})",
                                    at=at, actor=actor, attempt_id=attempt_id,
                                    payload={"decline_code": failure.decline_code}))
        log_entries(events)
        if webhook_events and webhooks.has_endpoints():
            webhooks.emit_many([(kind, case_payload(case), key) for kind, case, key in webhook_events])
    for k, failure in enumerate(failures):
        result = results[k]
        if result.created and (failure.decline_code or result.attempt is not None):
            # A hard decline stops retries at once (one query only for such declines).
            retries.after_decline(result.case, result.attempt, at=failure.failed_at or now)
    return results


# --- The engine's steps (in memory; dunning.batch writes them) ------------------------------------

def set_step(case: DunningCase, name: str, step: CampaignStep | None) -> None:
    """``case.<name> = step`` for a loaded step (what the descriptor stores, without its checks)."""
    case.__dict__[f"{name}_id"] = step.pk if step is not None else None
    case._state.fields_cache[name] = step


def advance(batch, case: DunningCase, step: CampaignStep, steps: list[CampaignStep]) -> None:
    """Move the case past ``step`` in memory, exhausted after the last one; the batch writes it with
    one UPDATE per (step, next) group."""
    set_step(case, "current_step", step)
    index = next((i for i, s in enumerate(steps) if s.pk == step.pk), len(steps) - 1)
    following = steps[index + 1] if index + 1 < len(steps) else None
    set_step(case, "next_step", following)
    if following is None:
        case.status = DunningCase.Status.EXHAUSTED
        case.closed_at = batch.now
        case.next_action_at = None
        batch.event(case, EventKind.CASE_EXHAUSTED, "Campaign finished without payment")
    elif getattr(case, "defer_until", None) is None:
        # Steps that fell due while workers were down run now, in order, not all skipped.
        case.next_action_at = max(case.failed_at + following.offset, batch.now)


def suspend_customers(customer_ids: set[int], at: datetime) -> None:
    """Suspend the service of these customers (a suspension step ran for one of their cases)."""
    Customer.objects.filter(pk__in=customer_ids, status=Customer.Status.ACTIVE).update(
        status=Customer.Status.SUSPENDED, suspended_at=at, updated_at=at
    )


# --- Staff actions --------------------------------------------------------------------------------

def pause_case(case: DunningCase, *, actor=None, reason: str = "") -> DunningCase:
    with transaction.atomic():
        case = lock_case(case)
        if case.status != DunningCase.Status.ACTIVE:
            raise DunningError(f"Case #{case.pk} is {case.status}; only active cases can be paused")
        case.status = DunningCase.Status.PAUSED
        case.paused_at = timezone.now()
        case.save(update_fields=["status", "paused_at", "updated_at"])
        log(case, EventKind.CASE_PAUSED, reason or "Paused", actor=actor)
    return case


def resume_case(case: DunningCase, *, actor=None) -> DunningCase:
    """Resume a paused case. Steps whose time passed while paused run now, in order."""
    with transaction.atomic():
        case = lock_case(case)
        if case.status != DunningCase.Status.PAUSED:
            raise DunningError(f"Case #{case.pk} is {case.status}; only paused cases can be resumed")
        now = timezone.now()
        case.status = DunningCase.Status.ACTIVE
        case.paused_at = None
        if case.next_action_at is not None and case.next_action_at < now:
            case.next_action_at = now
        case.save(update_fields=["status", "paused_at", "next_action_at", "updated_at"])
        log(case, EventKind.CASE_RESUMED, "Resumed", actor=actor)
    return case


def cancel_case(case: DunningCase, *, actor=None, reason: str = "") -> DunningCase:
    with transaction.atomic():
        case = lock_case(case)
        if not case.is_open:
            raise DunningError(f"Case #{case.pk} is already {case.status}")
        now = timezone.now()
        close(case, DunningCase.Status.CANCELLED, now)
        log(case, EventKind.CASE_CANCELLED, reason or "Cancelled", actor=actor, at=now)
        reinstate_if_clear(case.customer_id, now, actor)
    return case


# --- Closing --------------------------------------------------------------------------------------

def close(case: DunningCase, status: str, at: datetime, *, cancelled_attempts=None, also=()) -> None:
    """Close an open case in the caller's transaction: its unsent messages and its unsent payment
    attempts are cancelled with it (``cancelled_attempts``: those the payment closing it cancelled).
    ``also``: other fields the caller set on the case, saved with it."""
    case.status = status
    case.closed_at = at
    case.next_action_at = None
    case.next_step = None
    case.save(update_fields=["status", "closed_at", "next_action_at", "next_step", "updated_at", *also])
    cancelled = outbox.cancel_queued(case_key(case.pk), reason=f"case {status}")
    if cancelled:
        log(case, EventKind.MESSAGES_CANCELLED, f"{cancelled} unsent message(s) cancelled", at=at,
            payload={"count": cancelled})
    if cancelled_attempts is None:
        reason = f"case {status}"
        cancelled_attempts = billing.cancel_unsent_attempts([case.invoice_id], reason=reason, at=at)
    else:
        reason = "invoice paid"
    log_cancelled_attempts(case, cancelled_attempts, reason, at)


def log_cancelled_attempts(case: DunningCase, attempt_ids, reason: str, at: datetime) -> None:
    if attempt_ids:
        ids = sorted(attempt_ids)
        log(case, EventKind.PAYMENT_ATTEMPTS_CANCELLED, f"{len(ids)} pending payment attempt(s) cancelled ({reason})",
            at=at, payload={"attempts": ids, "reason": reason})


def reinstate_if_clear(customer_id: int, at: datetime, actor) -> None:
    """Reinstate a suspended customer once no open case of theirs has reached suspension."""
    customer = Customer.objects.select_for_update().get(pk=customer_id)
    if customer.status != Customer.Status.SUSPENDED:
        return
    # Another invoice that led to suspension and is still unpaid keeps the service suspended.
    still_suspending = (
        DunningCase.objects.filter(customer_id=customer_id, events__kind=EventKind.CUSTOMER_SUSPENDED)
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
        log(case, EventKind.CUSTOMER_REINSTATED, "Service reinstated", actor=actor, at=at)
