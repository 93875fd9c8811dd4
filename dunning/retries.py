"""Smart retries: when a retry step may charge, when it must wait, and when it must stop.

The decision (``plan``) is a pure function of the facts the engine already holds for its batch --
the card's recent attempts (network limits), the last decline (class and advice-code retry-after),
the invoice's last attempt (minimum gap) and the campaign's RetryPolicy (local hour, paydays) -- so
one batch costs a fixed number of queries, and 100,000 decisions take a few seconds (bench/retries.py).
"""

from __future__ import annotations

import calendar
import datetime
import zoneinfo
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from billing import declines, limits
from billing.models import PaymentAttempt
from customers.models import PaymentMethod
from dunning.messages import message_context
from dunning.models import CampaignStep, DunningCase, RetryPolicy, WorkItem, case_key
from dunning.timeline import EventKind, log
from dunning.workqueue import create_work_item
from notifications import services as outbox

UTC = datetime.UTC
RETRY = "retry"
DEFER = "defer"
STOP = "stop"
UPDATE_TEMPLATE = "update_payment_method"
HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Policy:
    # A campaign without a RetryPolicy charges when its step is due (any hour, no payday), still within
    # the network limits, advice codes and the minimum gap. The shipped Standard campaign gets 10:00.
    local_hour: int | None = None
    use_paydays: bool = False
    paydays: tuple[int, ...] = (1, 15)
    min_gap: timedelta = timedelta(hours=20)
    quick_retry: timedelta = timedelta(minutes=60)
    max_quick_retries: int = 2

    @classmethod
    def from_model(cls, row: RetryPolicy | None) -> Policy:
        if row is None:
            return DEFAULT_POLICY
        return cls(local_hour=row.local_hour, use_paydays=row.use_paydays,
                   paydays=tuple(sorted(set(row.paydays))) or (1, 15),
                   min_gap=timedelta(hours=row.min_gap_hours), quick_retry=timedelta(minutes=row.quick_retry_minutes),
                   max_quick_retries=row.max_quick_retries)


DEFAULT_POLICY = Policy()


def ensure_default_retry_policy(campaign) -> RetryPolicy:
    """The shipped campaign's timing: charge at 10:00 in the customer's time zone, 20 hours apart."""
    policy, _created = RetryPolicy.objects.get_or_create(campaign=campaign, defaults={"local_hour": 10})
    return policy


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # retry | defer | stop
    at: datetime.datetime | None
    decline_class: str = ""
    reasons: tuple[str, ...] = ()


def _days_from(day: datetime.date, policy: Policy, paydays: bool):
    """Candidate local dates from ``day`` on: every day, or only paydays (a 31 means the month's last day)."""
    if not paydays:
        for offset in range(3):
            yield day + timedelta(days=offset)
        return
    year, month = day.year, day.month
    for _ in range(3):
        last = calendar.monthrange(year, month)[1]
        for number in sorted({min(p, last) for p in policy.paydays}):
            candidate = datetime.date(year, month, number)
            if candidate >= day:
                yield candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def align(moment: datetime.datetime, tz: zoneinfo.ZoneInfo, policy: Policy, paydays: bool) -> datetime.datetime:
    """The earliest moment >= ``moment`` that falls in the policy's local hour (and on a payday)."""
    day = moment.astimezone(tz).date()
    for candidate in _days_from(day, policy, paydays):
        if policy.local_hour is None:
            if candidate == day:
                return moment
            return datetime.datetime.combine(candidate, datetime.time(0), tzinfo=tz).astimezone(UTC)
        start = datetime.datetime.combine(candidate, datetime.time(policy.local_hour), tzinfo=tz).astimezone(UTC)
        if moment < start + HOUR:
            return max(moment, start)
    return moment


def plan(now: datetime.datetime, *, tz: zoneinfo.ZoneInfo, policy: Policy, brand: str,
         usage: limits.CardUsage, last_invoice_attempt: datetime.datetime | None,
         method_blocked: bool, table: declines.DeclineTable, fallback_decline_code: str = "",
         planned: bool = False) -> Decision:
    """Decide one retry. Pure: no queries.

    ``planned``: this retry was deferred to now by an earlier decision, which already chose the local
    hour and payday; if the workers are late, only the hard constraints (limits, gap, advice) are
    checked again, so a missed hour does not push the retry back by another day.
    """
    last = usage.last_decline
    if last is None and fallback_decline_code:
        # No decline on this card yet: the one reported when the case opened (by the billing system).
        found = table.classify(fallback_decline_code, "", "", brand)
    else:
        found = table.classify(last[1], last[2], last[3], brand) if last else None
    decline_class = found.decline_class if found else ""
    if method_blocked or (found is not None and found.stops_method):
        return Decision(STOP, None, decline_class, ("the payment method cannot be charged again",))
    earliest = now
    reasons = []
    quick = decline_class == declines.RETRY_SOON
    gap = policy.quick_retry if quick and policy.quick_retry else policy.min_gap
    if last_invoice_attempt is not None and last_invoice_attempt + gap > earliest:
        earliest = last_invoice_attempt + gap
        reasons.append("minimum gap")
    if found is not None and found.retry_after and last and last[0] + found.retry_after > earliest:
        earliest = last[0] + found.retry_after
        reasons.append(f"advice code retry-after {found.retry_after}")
    free_at = limits.next_allowed(usage, brand, earliest)
    if free_at is not None and free_at > earliest:
        earliest = free_at
        reasons.append("network limit")
    if not quick and not (planned and earliest <= now):
        aligned = align(earliest, tz, policy, paydays=policy.use_paydays and decline_class == declines.SOFT)
        if aligned > earliest:
            earliest = aligned
            reasons.append("payday" if policy.use_paydays and decline_class == declines.SOFT else "local hour")
            # Usage never grows while we wait, so a later moment cannot break a limit it kept.
    if earliest <= now:
        return Decision(RETRY, now, decline_class, tuple(reasons))
    return Decision(DEFER, earliest, decline_class, tuple(reasons))


# --- The engine's batch -------------------------------------------------------------------------

@dataclass
class RetryContext:
    usage: dict[int, limits.CardUsage] = field(default_factory=dict)
    last_attempt: dict[int, datetime.datetime] = field(default_factory=dict)
    policies: dict[int, Policy] = field(default_factory=dict)
    table: declines.DeclineTable | None = None
    steps: dict[int, list[CampaignStep]] = field(default_factory=dict)


def prepare(batch, cases: list[DunningCase], steps: dict[int, list[CampaignStep]] | None = None) -> RetryContext:
    """Everything retry decisions of one batch need: three queries, whatever the batch size."""
    retrying = [c for c in cases if c.next_step.action == CampaignStep.Action.RETRY]
    ctx = RetryContext(table=declines.get_table(), steps=steps or {})
    if not retrying:
        return ctx
    ctx.usage = limits.usage_for({m.pk for m in batch.methods.values()}, batch.now)
    ctx.last_attempt = dict(
        PaymentAttempt.objects.filter(invoice_id__any={c.invoice_id for c in retrying})
        .exclude(decline_code__in=limits.LOCAL_CODES).exclude(outcome=PaymentAttempt.Outcome.CANCELLED)
        .values("invoice_id").annotate(last=Max("created_at")).values_list("invoice_id", "last")
    )
    ctx.policies = {
        p.campaign_id: Policy.from_model(p)
        for p in RetryPolicy.objects.filter(campaign_id__in={c.campaign_id for c in retrying})
    }
    return ctx


def decide_in_batch(batch, case: DunningCase, method: PaymentMethod) -> Decision:
    ctx: RetryContext = batch.retry_context or prepare(batch, [case])
    decision = plan(
        batch.now, tz=case.customer.tz, policy=ctx.policies.get(case.campaign_id, DEFAULT_POLICY),
        brand=method.brand, usage=ctx.usage.get(method.pk, limits.EMPTY),
        last_invoice_attempt=ctx.last_attempt.get(case.invoice_id),
        method_blocked=method.charge_blocked_at is not None, table=ctx.table,
        fallback_decline_code=case.decline_code, planned=case.retry_state == DunningCase.RetryState.DEFERRED,
    )
    if decision.action == RETRY:
        # Several invoices of one card may be in the same batch: count this charge for the next one.
        usage = ctx.usage.get(method.pk)
        if usage is None:
            usage = ctx.usage[method.pk] = limits.CardUsage([])
        usage.times.append(batch.now)
        ctx.last_attempt[case.invoice_id] = batch.now
    return decision


def _following_step_at(ctx: RetryContext, case: DunningCase, step: CampaignStep) -> datetime.datetime | None:
    steps = ctx.steps.get(case.campaign_id, [])
    for i, s in enumerate(steps):
        if s.pk == step.pk and i + 1 < len(steps):
            return case.failed_at + steps[i + 1].offset
    return None


def apply_in_batch(batch, case: DunningCase, step: CampaignStep, method: PaymentMethod, decision: Decision) -> bool:
    """Record a deferred or stopped retry on the engine's batch. True: the case waits on this step."""
    if decision.action == DEFER:
        following = _following_step_at(batch.retry_context, case, step)
        why = ", ".join(decision.reasons)
        if following is not None and decision.at >= following:
            # Waiting would hold back the rest of the campaign: leave this retry to the next one.
            batch.event(case, EventKind.STEP_RETRY_SKIPPED, f"Retry not allowed before the next step ({why})", step,
                        reasons=list(decision.reasons), until=decision.at.isoformat())
            return False
        case.retry_state = DunningCase.RetryState.DEFERRED
        case.next_action_at = case.defer_until = decision.at  # the engine writes defer_until as is
        case.held = True  # the step did not run (no "step completed" webhook)
        batch.event(case, EventKind.STEP_RETRY_DEFERRED, f"Retry deferred to {decision.at:%Y-%m-%d %H:%M} UTC ({why})",
                    step, reasons=list(decision.reasons), until=decision.at.isoformat())
        return True
    # STOP: the method cannot be charged again.
    batch.event(case, EventKind.STEP_RETRY_SKIPPED, "The payment method cannot be charged again; waiting for a new one",
                step, decline_class=decision.decline_class, payment_method=method.pk)
    if case.retry_state != DunningCase.RetryState.NEEDS_PAYMENT_METHOD:
        case.retry_state = DunningCase.RetryState.NEEDS_PAYMENT_METHOD
        batch.event(case, EventKind.CASE_NEEDS_PAYMENT_METHOD, "Retries stopped; waiting for a new payment method",
                    step, decline_class=decision.decline_class)
        rows, item = needs_method_effects(case, method, batch.now, message_context(case, batch.now))
        batch.notifications.extend(rows)
        batch.work_items.append(item)
    return False


def needs_method_effects(case: DunningCase, method: PaymentMethod | None, now: datetime.datetime, context: dict):
    """The message and work item for a case that needs a new payment method (unsaved rows)."""
    tag = method.pk if method else "none"
    rows = []
    card = {"card_brand": method.brand.title(), "card_last4": method.last4} if method else {}
    for channel in ("email",):
        row = outbox.build(case.customer, channel=channel, template_code=UPDATE_TEMPLATE,
                           context={**context, **card},
                           dedupe_key=case_key(case.pk, "needs-method", tag, channel),
                           reference=case_key(case.pk), send_after=now)
        if row is not None:
            rows.append(row)
    item = WorkItem(customer=case.customer, case=case, kind=WorkItem.Kind.NEEDS_PAYMENT_METHOD,
                    title=f"{case.customer.name}: payment method cannot be charged ({case.invoice.number})",
                    body=f"{method or 'No method'} was declined in a way that rules out retrying it.",
                    dedupe_key=f"needs-method:{case_key(case.pk, tag)}", created_at=now, updated_at=now)
    return rows, item


# --- After a decline (one attempt at a time, outside the engine) ----------------------------------

def after_decline(case: DunningCase, attempt: PaymentAttempt | None, *, at: datetime.datetime | None = None) -> str:
    """React to a decline on an open case: stop retrying the method, or retry soon. Returns the class."""
    at = at or timezone.now()
    if attempt is not None and attempt.decline_class:
        decline_class = attempt.decline_class
    else:
        method = attempt.payment_method if attempt else None
        decline_class = declines.classify(
            attempt.decline_code if attempt else case.decline_code, attempt.network_code if attempt else "",
            attempt.advice_code if attempt else "", method.brand if method else "",
        ).decline_class
    if decline_class not in declines.STOPS_METHOD and decline_class != declines.RETRY_SOON:
        return decline_class  # a soft decline: the campaign's next retry step handles it
    with transaction.atomic():
        case = DunningCase.objects.select_for_update().select_related("invoice", "customer", "campaign").get(
            pk=case.pk)
        if not case.is_open:
            return decline_class
        if decline_class in declines.STOPS_METHOD:
            if case.retry_state == DunningCase.RetryState.NEEDS_PAYMENT_METHOD:
                return decline_class
            method = attempt.payment_method if attempt else None
            if method is None:
                # The billing system reported the decline without naming the method: it charged the default.
                method = case.customer.default_payment_method
                if method is not None:
                    PaymentMethod.objects.filter(pk=method.pk, charge_blocked_at__isnull=True).update(
                        charge_blocked_at=at, charge_blocked_reason=f"{decline_class}: {case.decline_code}"[:100])
            case.retry_state = DunningCase.RetryState.NEEDS_PAYMENT_METHOD
            case.save(update_fields=["retry_state", "updated_at"])
            log(case, EventKind.CASE_NEEDS_PAYMENT_METHOD,
                f"Retries stopped ({decline_class}); waiting for a new payment method", at=at,
                attempt=attempt, payload={"decline_class": decline_class})
            rows, item = needs_method_effects(case, method, at, message_context(case, at))
            outbox.queue(rows, at)
            create_work_item(case.customer, item.kind, item.title, body=item.body, case=case,
                             dedupe_key=item.dedupe_key, at=at)
        elif decline_class == declines.RETRY_SOON and attempt is not None:
            _retry_soon(case, attempt, at)
    return decline_class


def _retry_soon(case: DunningCase, attempt: PaymentAttempt, at: datetime.datetime) -> None:
    """A processing error on a retry step: run that step again shortly (within the policy's allowance)."""
    policy = Policy.from_model(RetryPolicy.objects.filter(campaign_id=case.campaign_id).first())
    step = case.current_step
    if (not policy.quick_retry or case.quick_retries >= policy.max_quick_retries or step is None
            or step.action != CampaignStep.Action.RETRY
            or not attempt.idempotency_key.startswith(case_key(case.pk, "step", step.pk))):
        return
    case.quick_retries += 1
    case.next_step = step
    case.next_action_at = at + policy.quick_retry
    case.save(update_fields=["quick_retries", "next_step", "next_action_at", "updated_at"])
    log(case, EventKind.STEP_RETRY_SOON, f"Processing error: retrying at {case.next_action_at:%Y-%m-%d %H:%M} UTC",
        at=at, attempt=attempt, step=step)


def manual_retry_refusal(method: PaymentMethod, now: datetime.datetime | None = None) -> str:
    """Why staff may not charge this method now ("" if they may): a block or a network limit."""
    now = now or timezone.now()
    if method.charge_blocked_at is not None:
        return f"{method} cannot be charged again ({method.charge_blocked_reason or 'hard decline'})"
    usage = limits.usage_for([method.pk], now).get(method.pk, limits.EMPTY)
    free_at = limits.next_allowed(usage, method.brand, now)
    if free_at is not None:
        return f"{method} has reached its network retry limit; next charge allowed after {free_at:%Y-%m-%d %H:%M} UTC"
    return ""


def clear_needs_payment_method(method: PaymentMethod, *, actor=None) -> None:
    """A new or updated method: unblock it, close the staff's "needs a payment method" items and let the
    customer's cases retry again (called by dunning.payments.retry_after_method_update)."""
    now = timezone.now()
    PaymentMethod.objects.filter(pk=method.pk).exclude(charge_blocked_at=None).update(
        charge_blocked_at=None, charge_blocked_reason="", updated_at=now)
    method.charge_blocked_at = None
    method.charge_blocked_reason = ""
    WorkItem.objects.filter(customer_id=method.customer_id, kind=WorkItem.Kind.NEEDS_PAYMENT_METHOD).exclude(
        status=WorkItem.Status.DONE).update(status=WorkItem.Status.DONE, done_at=now, updated_at=now)
    for case in DunningCase.objects.open().filter(
        customer_id=method.customer_id, retry_state=DunningCase.RetryState.NEEDS_PAYMENT_METHOD
    ):
        DunningCase.objects.filter(pk=case.pk).update(retry_state=DunningCase.RetryState.SCHEDULED)
        log(case, EventKind.CASE_PAYMENT_METHOD_UPDATED, f"New payment method {method}; retries resume", actor=actor)
