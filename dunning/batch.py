"""One batch of the engine: the claimed cases loaded with one query, every effect of their steps
collected in memory, then written with a fixed number of bulk queries (``flush``).

Timeline events, outbox rows and pending attempts are kept as column tuples (core.bulk.insert_rows):
a batch writes several per case, and a model instance per row cost more than the rest of the step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import DateTimeField, ExpressionWrapper, F, Value
from django.db.models.functions import Greatest

from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from core import bulk
from customers.models import PaymentMethod
from dunning import retries, webhook_events
from dunning.cases import suspend_customers
from dunning.models import CampaignStep, DunningCase, WorkItem
from dunning.timeline import EventKind, entry, log_entries
from notifications import services as outbox
from notifications import webhooks

ENGINE = "engine"  # the actor of everything a batch writes

# A pending attempt as billing.services.new_attempt builds it, as values in these columns.
ATTEMPT_COLUMNS = ("invoice_id", "payment_method_id", "amount", "currency", "source", "gateway", "idempotency_key",
                   "lease_until", "created_at")

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


@dataclass
class Batch:
    """Everything one batch writes, flushed with one query per kind."""

    now: datetime
    # timeline entries (dunning.timeline.entry)
    events: list[tuple] = field(default_factory=list)
    # (attempt values in ATTEMPT_COLUMNS order, its "step.retry" event: (case_id, kind, message, step_id, payload))
    attempts: list[tuple[tuple, tuple]] = field(default_factory=list)
    notifications: list[outbox.OutboxRow] = field(default_factory=list)
    suspend_customers: set[int] = field(default_factory=set)
    uncollectible_invoices: set[int] = field(default_factory=set)
    methods: dict[int, PaymentMethod] = field(default_factory=dict)
    retry_context: retries.RetryContext | None = None
    work_items: list[WorkItem] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # data loaded once per batch by helpers (dunning.messages)
    steps: dict[int, list[CampaignStep]] = field(default_factory=dict)

    def event(self, case: DunningCase, kind: str, message: str, step: CampaignStep | None = None,
              **payload) -> None:
        self.events.append(entry(case.pk, kind, message, at=self.now, actor=ENGINE, payload=payload,
                                 step_id=step.pk if step is not None else None))


def load_cases(ids: list[int]) -> list[DunningCase]:
    """The claimed cases with their invoice and customer (CASE_FIELDS), in one query."""
    return list(DunningCase.objects.filter(pk__any=ids).select_related("invoice", "customer").only(*CASE_FIELDS))


def flush(batch: Batch, cases: list[DunningCase]) -> None:
    """Write what the batch collected, and the cases' new state."""
    now = batch.now
    events = batch.events
    if batch.attempts:
        ids = bulk.insert_rows(PaymentAttempt, ATTEMPT_COLUMNS, [a for a, _e in batch.attempts], returning=True)
        events += [entry(case_id, kind, message, at=now, actor=ENGINE, payload=payload, step_id=step_id,
                         attempt_id=pk)
                   for (_a, (case_id, kind, message, step_id, payload)), pk in zip(batch.attempts, ids, strict=True)]
    outbox.queue(batch.notifications, now)
    if batch.work_items:
        WorkItem.objects.bulk_create(batch.work_items, ignore_conflicts=True)  # dedupe_key: once per step
    if batch.suspend_customers:
        suspend_customers(batch.suspend_customers, now)
    if batch.uncollectible_invoices:
        Invoice.objects.filter(pk__in=batch.uncollectible_invoices, status=Invoice.Status.OPEN).update(
            status=Invoice.Status.UNCOLLECTIBLE, updated_at=now
        )
        # Written off: its unsent attempts are cancelled in the same transaction.
        cancelled = billing.cancel_unsent_attempts(batch.uncollectible_invoices, reason="invoice written off",
                                                   at=now)
        by_invoice: dict[int, list[int]] = defaultdict(list)
        for attempt_id, invoice_id in cancelled.items():
            by_invoice[invoice_id].append(attempt_id)
        for case in cases:
            if ids := sorted(by_invoice.get(case.invoice_id, ())):
                events.append(entry(case.pk, EventKind.PAYMENT_ATTEMPTS_CANCELLED,
                                    f"{len(ids)} pending payment attempt(s) cancelled (invoice written off)",
                                    at=now, actor=ENGINE, payload={"attempts": ids, "reason": "invoice written off"}))
    log_entries(events)
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
