"""The engine: run the campaign steps that are due, in claimed batches.

One batch: lock up to N due cases with SKIP LOCKED (another worker takes the next N), decide each
case's step in memory, write every effect with a fixed number of bulk queries (dunning.batch),
advance the cases and commit. Gateway calls and message sending happen afterwards, outside the
lock, driven by the pending PaymentAttempt and queued Notification rows written here
(transactional outbox).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import services as billing
from billing.models import PaymentAttempt
from billing.money import format_money
from customers.models import PaymentMethod
from dunning import messages, retries
from dunning.batch import Batch, flush, load_cases
from dunning.cases import advance, set_step
from dunning.models import CampaignStep, DunningCase, WorkItem, case_key
from dunning.timeline import EventKind


def do_retry(batch: Batch, case: DunningCase, step: CampaignStep) -> bool | None:
    if reason := billing.not_chargeable(case.invoice):
        # Written off by an earlier step, or voided by the billing system: never charged again.
        batch.event(case, EventKind.STEP_RETRY_SKIPPED, f"Not charged: {reason}", step)
        return
    method = batch.methods.get(case.customer_id)
    if method is None:
        batch.event(case, EventKind.STEP_RETRY_SKIPPED, "No payment method on file", step)
        return
    # Smart retries (dunning.retries): a retry may wait (returns True: the case stays on this step)
    # or stop because the method cannot be charged again.
    decision = retries.decide_in_batch(batch, case, method)
    if decision.action != retries.RETRY:
        return retries.apply_in_batch(batch, case, step, method, decision)
    case.retry_state = DunningCase.RetryState.SCHEDULED
    # A pending attempt as billing.services.new_attempt builds it, as values (batch.ATTEMPT_COLUMNS).
    invoice = case.invoice
    amount, currency = invoice.amount_remaining, invoice.currency
    key = case_key(case.pk, "step", step.pk) + (f":q{case.quick_retries}" if case.quick_retries else "")
    # lease_until and created_at: now (network limits count attempts by created_at).
    attempt = (invoice.pk, method.pk, amount, currency, PaymentAttempt.Source.RETRY, method.gateway, key,
               batch.now, batch.now)
    event = (case.pk, EventKind.STEP_RETRY, f"Retry of {amount} {currency} queued", step.pk,
             {"amount": str(amount), "payment_method": method.pk})
    batch.attempts.append((attempt, event))


def do_message(batch: Batch, case: DunningCase, step: CampaignStep) -> None:
    messages.queue_messages(batch, case, step)


def do_suspend(batch: Batch, case: DunningCase, step: CampaignStep) -> None:
    batch.suspend_customers.add(case.customer_id)
    batch.event(case, EventKind.CUSTOMER_SUSPENDED, "Service suspended", step)
    if step.template_code:
        messages.queue_messages(batch, case, step)


def do_mark_uncollectible(batch: Batch, case: DunningCase, step: CampaignStep) -> None:
    batch.uncollectible_invoices.add(case.invoice_id)
    batch.event(case, EventKind.INVOICE_UNCOLLECTIBLE, f"Invoice {case.invoice.number} marked uncollectible", step)


def do_call(batch: Batch, case: DunningCase, step: CampaignStep) -> None:
    """Put a "call the customer" task in the staff work queue (once per case and step)."""
    invoice, customer = case.invoice, case.customer
    title = f"Call {customer.name} about {invoice.number} ({format_money(invoice.amount_remaining, invoice.currency)})"
    batch.work_items.append(WorkItem(
        kind=WorkItem.Kind.CALL, customer=customer, case=case, title=title[:200],
        body=f"Phone: {customer.phone or 'none on file'}", dedupe_key=case_key(case.pk, "step", step.pk, "call"),
        created_at=batch.now, updated_at=batch.now,
    ))
    batch.event(case, EventKind.WORKITEM_CREATED, f"Call the customer: {title}", step, work_kind=WorkItem.Kind.CALL)


# Step action -> handler. A handler records its effects on the batch; it performs no query.
ACTIONS: dict[str, Callable[[Batch, DunningCase, CampaignStep], None]] = {
    CampaignStep.Action.RETRY: do_retry,
    CampaignStep.Action.EMAIL: do_message,
    CampaignStep.Action.FINAL_NOTICE: do_message,
    CampaignStep.Action.SUSPEND: do_suspend,
    CampaignStep.Action.MARK_UNCOLLECTIBLE: do_mark_uncollectible,
    CampaignStep.Action.CALL: do_call,
}


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
        steps = batch.steps = CampaignStep.objects.by_campaign({c.campaign_id for c in cases})
        step_by_id = {step.pk: step for campaign_steps in steps.values() for step in campaign_steps}
        for case in cases:
            set_step(case, "next_step", step_by_id[case.next_step_id])
        retry_customers = {c.customer_id for c in cases if c.next_step.action == CampaignStep.Action.RETRY}
        if retry_customers:
            batch.methods = {
                m.customer_id: m
                for m in PaymentMethod.objects.filter(
                    customer_id__any=retry_customers, is_default=True, detached_at__isnull=True
                )
            }
            batch.retry_context = retries.prepare(batch, cases, steps)
        messages.prepare(batch, cases, steps)
        for case in cases:
            step = case.next_step
            handler = ACTIONS.get(step.action)
            if handler is None:
                batch.event(case, EventKind.STEP_UNKNOWN_ACTION, f"Unknown action {step.action!r}; skipped", step)
            elif handler(batch, case, step):
                continue  # the step waits (a deferred retry): the case keeps it and its new time
            advance(batch, case, step, steps.get(case.campaign_id, [step]))
        flush(batch, cases)
    return len(cases)


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
