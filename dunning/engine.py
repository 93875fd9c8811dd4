"""The engine: run the campaign steps that are due, in claimed batches.

One batch: lock up to N due cases with SKIP LOCKED (another worker takes the next N), decide each
case's step in memory, write every effect with a fixed number of bulk queries, advance the cases
and commit. Gateway calls and message sending happen afterwards, outside the lock, driven by the
pending PaymentAttempt and queued Notification rows written here (transactional outbox).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from billing.money import format_money
from config import bulk
from customers.models import Customer, PaymentMethod
from dunning import consolidation, retries, webhook_events
from dunning.models import CampaignStep, CaseEvent, DunningCase, WorkItem
from notifications import services as outbox
from notifications import webhooks

logger = logging.getLogger(__name__)


# Timeline rows are kept as tuples in these columns (config.bulk.insert_rows): a batch writes
# several per case, and a model instance per row cost more than the rest of the step.
EVENT_COLUMNS = ("case_id", "kind", "message", "step_id", "payload", "at", "actor_label", "attempt_id")
ATTEMPT_COLUMNS = ("invoice_id", "payment_method_id", "amount", "currency", "source", "gateway", "idempotency_key",
                   "lease_until", "created_at")


@dataclass
class Batch:
    """Everything one batch writes, flushed with one query per kind."""

    now: datetime
    # (case_id, kind, message, step_id, payload) per timeline event
    events: list[tuple] = field(default_factory=list)
    # (attempt values in ATTEMPT_COLUMNS order, its "step.retry" event as in events)
    attempts: list[tuple[tuple, tuple]] = field(default_factory=list)
    notifications: list[outbox.OutboxRow] = field(default_factory=list)
    suspend_customers: set[int] = field(default_factory=set)
    uncollectible_invoices: set[int] = field(default_factory=set)
    methods: dict[int, PaymentMethod] = field(default_factory=dict)
    retry_context: retries.RetryContext | None = None
    work_items: list[WorkItem] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # data loaded once per batch by helpers (consolidation)
    steps: dict[int, list[CampaignStep]] = field(default_factory=dict)

    def event(self, case: DunningCase, kind: str, message: str, step: CampaignStep | None = None,
              **payload) -> None:
        self.events.append((case.pk, kind, message[:255], step.pk if step is not None else None, payload))


def message_context(case: DunningCase, now: datetime) -> dict:
    """Merge data stored with a message; rendered in the customer's language at send time, when the
    signed portal links are added too (settings.NOTIFICATION_LINK_BUILDER)."""
    invoice, customer = case.invoice, case.customer
    return {
        "customer_name": customer.name,
        "invoice_number": invoice.number,
        "amount": str(invoice.amount_remaining),
        "currency": invoice.currency,
        "due_date": invoice.due_date.isoformat(),
        "failed_at": case.failed_at.astimezone(customer.tz).date().isoformat(),
        "days_overdue": max((now.astimezone(customer.tz).date() - invoice.due_date).days, 0),
        "invoices": [{"number": invoice.number, "amount": str(invoice.amount_remaining),
                      "currency": invoice.currency, "due_date": invoice.due_date.isoformat()}],
    }


def queue_messages(batch: Batch, case: DunningCase, step: CampaignStep) -> None:
    # Recipients (billing contacts, escalation), one message per customer and step, and the respect
    # rules (opt-outs, bounces, quiet hours): see dunning.consolidation.
    consolidation.queue_messages(batch, case, step)


def do_retry(batch: Batch, case: DunningCase, step: CampaignStep) -> bool | None:
    if reason := billing.not_chargeable(case.invoice):
        # Written off by an earlier step, or voided by the billing system: never charged again.
        batch.event(case, "step.retry_skipped", f"Not charged: {reason}", step)
        return
    method = batch.methods.get(case.customer_id)
    if method is None:
        batch.event(case, "step.retry_skipped", "No payment method on file", step)
        return
    # Smart retries (dunning.retries): a retry may wait (returns True: the case stays on this step)
    # or stop because the method cannot be charged again.
    decision = retries.decide_in_batch(batch, case, method)
    if decision.action != retries.RETRY:
        return retries.apply_in_batch(batch, case, step, method, decision)
    case.retry_state = DunningCase.RetryState.SCHEDULED
    # A pending attempt as billing.services.new_attempt builds it, as values (ATTEMPT_COLUMNS).
    invoice = case.invoice
    amount, currency = invoice.amount_remaining, invoice.currency
    key = f"case:{case.pk}:step:{step.pk}" + (f":q{case.quick_retries}" if case.quick_retries else "")
    # lease_until and created_at: now (network limits count attempts by created_at).
    attempt = (invoice.pk, method.pk, amount, currency, PaymentAttempt.Source.RETRY, method.gateway, key,
               batch.now, batch.now)
    event = (case.pk, "step.retry", f"Retry of {amount} {currency} queued", step.pk,
             {"amount": str(amount), "payment_method": method.pk})
    batch.attempts.append((attempt, event))


def do_message(batch: Batch, case: DunningCase, step: CampaignStep) -> None:
    queue_messages(batch, case, step)


def do_suspend(batch: Batch, case: DunningCase, step: CampaignStep) -> None:
    batch.suspend_customers.add(case.customer_id)
    batch.event(case, "customer.suspended", "Service suspended", step)
    if step.template_code:
        queue_messages(batch, case, step)


def do_mark_uncollectible(batch: Batch, case: DunningCase, step: CampaignStep) -> None:
    batch.uncollectible_invoices.add(case.invoice_id)
    batch.event(case, "invoice.uncollectible", f"Invoice {case.invoice.number} marked uncollectible", step)


def do_call(batch: Batch, case: DunningCase, step: CampaignStep) -> None:
    """Put a "call the customer" task in the staff work queue (once per case and step)."""
    invoice, customer = case.invoice, case.customer
    title = f"Call {customer.name} about {invoice.number} ({format_money(invoice.amount_remaining, invoice.currency)})"
    batch.work_items.append(WorkItem(
        kind=WorkItem.Kind.CALL, customer=customer, case=case, title=title[:200],
        body=f"Phone: {customer.phone or 'none on file'}", dedupe_key=f"case:{case.pk}:step:{step.pk}:call",
        created_at=batch.now, updated_at=batch.now,
    ))
    batch.event(case, "workitem.created", f"Call the customer: {title}", step, work_kind=WorkItem.Kind.CALL)


# Step action -> handler. A handler records its effects on the batch; it performs no query.
ACTIONS: dict[str, Callable[[Batch, DunningCase, CampaignStep], None]] = {
    CampaignStep.Action.RETRY: do_retry,
    CampaignStep.Action.EMAIL: do_message,
    CampaignStep.Action.FINAL_NOTICE: do_message,
    CampaignStep.Action.SUSPEND: do_suspend,
    CampaignStep.Action.MARK_UNCOLLECTIBLE: do_mark_uncollectible,
    CampaignStep.Action.CALL: do_call,
}


def _steps_by_campaign(campaign_ids: set[int]) -> dict[int, list[CampaignStep]]:
    steps: dict[int, list[CampaignStep]] = {}
    for step in CampaignStep.objects.filter(campaign_id__in=campaign_ids).order_by("campaign_id", "position"):
        steps.setdefault(step.campaign_id, []).append(step)
    return steps


def _set_step(case: DunningCase, name: str, step: CampaignStep | None) -> None:
    """``case.<name> = step`` for a loaded step (what the descriptor stores, without its checks)."""
    case.__dict__[f"{name}_id"] = step.pk if step is not None else None
    case._state.fields_cache[name] = step


def _advance(case: DunningCase, step: CampaignStep, steps: list[CampaignStep], batch: Batch) -> None:
    """Move the case past `step` in memory; _flush writes it with one UPDATE per (step, next) group."""
    _set_step(case, "current_step", step)
    index = next((i for i, s in enumerate(steps) if s.pk == step.pk), len(steps) - 1)
    following = steps[index + 1] if index + 1 < len(steps) else None
    _set_step(case, "next_step", following)
    if following is None:
        case.status = DunningCase.Status.EXHAUSTED
        case.closed_at = batch.now
        case.next_action_at = None
        batch.event(case, "case.exhausted", "Campaign finished without payment")
    elif getattr(case, "defer_until", None) is None:
        # Steps that fell due while workers were down run now, in order, not all skipped.
        case.next_action_at = max(case.failed_at + following.offset, batch.now)


# The columns a batch reads; handlers that need more add them here rather than query per case.
CASE_FIELDS = (
    "id", "status", "failed_at", "decline_code", "campaign_id", "current_step_id", "next_step_id",
    "next_action_at", "closed_at", "retry_state", "quick_retries",
    "invoice__id", "invoice__number", "invoice__external_id", "invoice__currency", "invoice__amount_due",
    "invoice__amount_paid", "invoice__due_date", "invoice__status", "invoice__customer_id",
    "customer__id", "customer__name", "customer__email", "customer__phone", "customer__locale",
    "customer__timezone", "customer__status", "customer__segment", "customer__country", "customer__external_id",
    "customer__opt_out_email", "customer__opt_out_sms", "customer__opt_out_inapp", "customer__email_undeliverable",
)


def run_batch(now: datetime, batch_size: int) -> int:
    """Claim and run one batch of due steps; returns how many steps ran (0: nothing was due)."""
    with transaction.atomic():
        # Claim first, then load: locking and joining in one statement can hand back a row another
        # worker advanced meanwhile with its old join (the concurrency test catches that).
        ids = list(
            DunningCase.objects.due(now)
            .order_by("next_action_at")
            # NO KEY UPDATE: timeline rows other transactions write for these cases are not blocked.
            .select_for_update(skip_locked=True, no_key=True)
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return 0
        cases = load_cases(ids)
        batch = Batch(now=now)
        steps = batch.steps = _steps_by_campaign({c.campaign_id for c in cases})
        step_by_id = {step.pk: step for campaign_steps in steps.values() for step in campaign_steps}
        for case in cases:
            _set_step(case, "next_step", step_by_id[case.next_step_id])
        retry_customers = {c.customer_id for c in cases if c.next_step.action == CampaignStep.Action.RETRY}
        if retry_customers:
            batch.methods = {
                m.customer_id: m
                for m in PaymentMethod.objects.filter(
                    customer_id__any=retry_customers, is_default=True, detached_at__isnull=True
                )
            }
            batch.retry_context = retries.prepare(batch, cases, steps)
        consolidation.prepare(batch, cases, steps)
        for case in cases:
            step = case.next_step
            handler = ACTIONS.get(step.action)
            if handler is None:
                batch.event(case, "step.unknown_action", f"Unknown action {step.action!r}; skipped", step)
            elif handler(batch, case, step):
                continue  # the step waits (a deferred retry): the case keeps it and its new time
            _advance(case, step, steps.get(case.campaign_id, [step]), batch)
        _flush(batch, cases)
    return len(cases)


def load_cases(ids: list[int]) -> list[DunningCase]:
    """The claimed cases with their invoice and customer (CASE_FIELDS), as ``select_related(...)
    .only(...)`` returns them, built from one ``values_list`` query (config.bulk.instances)."""
    own = [name for name in CASE_FIELDS if "__" not in name]
    inv = [name for name in CASE_FIELDS if name.startswith("invoice__")]
    cust = [name for name in CASE_FIELDS if name.startswith("customer__")]
    assert len(own) + len(inv) + len(cust) == len(CASE_FIELDS), "CASE_FIELDS: the case, its invoice or customer"
    assert all(name.count("__") == 1 for name in inv + cust), "CASE_FIELDS: one level of relation"
    rows = list(DunningCase.objects.filter(pk__any=ids).values_list(*own, *inv, *cust))
    n_own, n_inv = len(own), len(inv)
    cases = bulk.instances(DunningCase, own, (r[:n_own] for r in rows))
    invoices = bulk.instances(Invoice, [n.removeprefix("invoice__") for n in inv],
                              (r[n_own:n_own + n_inv] for r in rows))
    customers = bulk.instances(Customer, [n.removeprefix("customer__") for n in cust],
                               (r[n_own + n_inv:] for r in rows))
    for case, invoice, customer in zip(cases, invoices, customers, strict=True):
        case.invoice_id, case.customer_id = invoice.pk, customer.pk
        cache = case._state.fields_cache
        cache["invoice"], cache["customer"] = invoice, customer
    return cases


def _flush(batch: Batch, cases: list[DunningCase]) -> None:
    now = batch.now
    events = [(*e, now, "engine", None) for e in batch.events]
    if batch.attempts:
        ids = bulk.insert_rows(PaymentAttempt, ATTEMPT_COLUMNS, [a for a, _e in batch.attempts], returning=True)
        events += [(*e, now, "engine", pk) for (_a, e), pk in zip(batch.attempts, ids, strict=True)]
    outbox.queue(batch.notifications, now)
    if batch.work_items:
        WorkItem.objects.bulk_create(batch.work_items, ignore_conflicts=True)  # dedupe_key: once per step
    if batch.suspend_customers:
        Customer.objects.filter(pk__in=batch.suspend_customers, status=Customer.Status.ACTIVE).update(
            status=Customer.Status.SUSPENDED, suspended_at=batch.now, updated_at=batch.now
        )
    if batch.uncollectible_invoices:
        Invoice.objects.filter(pk__in=batch.uncollectible_invoices, status=Invoice.Status.OPEN).update(
            status=Invoice.Status.UNCOLLECTIBLE, updated_at=batch.now
        )
        # Written off: its unsent attempts are cancelled in the same transaction.
        cancelled = billing.cancel_unsent_attempts(batch.uncollectible_invoices, reason="invoice written off",
                                                   at=now)
        by_invoice: dict[int, list[int]] = defaultdict(list)
        for attempt_id, invoice_id in cancelled.items():
            by_invoice[invoice_id].append(attempt_id)
        for case in cases:
            if ids := sorted(by_invoice.get(case.invoice_id, ())):
                events.append((case.pk, "payment.attempts_cancelled",
                               f"{len(ids)} pending payment attempt(s) cancelled (invoice written off)", None,
                               {"attempts": ids, "reason": "invoice written off"}, now, "engine", None))
    bulk.insert_rows(CaseEvent, EVENT_COLUMNS, events)
    if webhooks.has_endpoints():
        webhooks.emit_many(webhook_events.for_batch(batch, cases))
    _write_cases(batch, cases)


def _write_cases(batch: Batch, cases: list[DunningCase]) -> None:
    """One UPDATE per (step that ran, next step) group, the next time computed in SQL: the number
    of queries depends on how many distinct steps a batch holds, not on how many cases."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    custom: list[DunningCase] = []
    for case in cases:
        case.updated_at = batch.now
        if getattr(case, "defer_until", None) is not None:
            case.next_action_at = case.defer_until
            custom.append(case)
            continue
        groups[(case.current_step, case.next_step, case.status, case.retry_state)].append(case.pk)
    for (current, following, status, retry_state), ids in groups.items():
        values = {"current_step": current, "next_step": following, "status": status, "retry_state": retry_state,
                  "updated_at": batch.now}
        if following is None:
            values.update(next_action_at=None, closed_at=batch.now)
        else:
            values["next_action_at"] = Greatest(
                ExpressionWrapper(F("failed_at") + Value(following.offset), output_field=DateTimeField()),
                Value(batch.now, output_field=DateTimeField()),
            )
        DunningCase.objects.filter(pk__any=ids).update(**values)
    if custom:
        DunningCase.objects.bulk_update(
            custom, ["current_step", "next_step", "next_action_at", "status", "closed_at", "retry_state", "updated_at"]
        )


def run_due_steps(now: datetime | None = None, *, batch_size: int | None = None,
                  max_batches: int | None = None) -> int:
    """Run every step that is due at ``now``. Safe to run in several processes at once."""
    now = now or timezone.now()
    batch_size = batch_size or settings.DUNNING_BATCH_SIZE
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        done = run_batch(now, batch_size)
        if not done:
            break
        total += done
        batches += 1
    return total
