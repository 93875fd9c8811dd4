"""The case timeline: every kind of event, and the one function that writes them.

A case's timeline (CaseEvent rows, append-only) is its audit trail. Every kind is declared once in
``EventKind``, namespaced by subject (``case.opened``, ``payment.declined``...). ``log()`` writes one
event; ``log_entries()`` writes many at once (the engine's batches, the fee job, the notifications
of a sending batch) from ``entry()`` tuples. Both insert through ``log_entries``, one query for any
number of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.models import PaymentAttempt
from core import bulk
from dunning.models import CampaignStep, CaseEvent, DunningCase


class EventKind(models.TextChoices):
    # The case itself
    CASE_OPENED = "case.opened", _("Case opened")
    CASE_PAUSED = "case.paused", _("Case paused")
    CASE_RESUMED = "case.resumed", _("Case resumed")
    CASE_RESCHEDULED = "case.rescheduled", _("Steps rescheduled")
    CASE_CANCELLED = "case.cancelled", _("Case cancelled")
    CASE_RECOVERED = "case.recovered", _("Case recovered")
    CASE_EXHAUSTED = "case.exhausted", _("Campaign finished without payment")
    CASE_NEEDS_PAYMENT_METHOD = "case.needs_payment_method", _("Waiting for a new payment method")
    CASE_PAYMENT_METHOD_UPDATED = "case.payment_method_updated", _("New payment method; retries resume")
    # Campaign steps
    STEP_RETRY = "step.retry", _("Retry queued")
    STEP_RETRY_SKIPPED = "step.retry_skipped", _("Retry skipped")
    STEP_RETRY_DEFERRED = "step.retry_deferred", _("Retry deferred")
    STEP_RETRY_SOON = "step.retry_soon", _("Retry soon after a processing error")
    STEP_UNKNOWN_ACTION = "step.unknown_action", _("Unknown step action")
    # Payments
    PAYMENT_FAILED = "payment.failed", _("Payment failed again")
    PAYMENT_DECLINED = "payment.declined", _("Payment declined")
    PAYMENT_PARTIAL = "payment.partial", _("Partial payment")
    PAYMENT_CREDIT = "payment.credit", _("Overpayment kept as credit")
    PAYMENT_AFTER_CLOSE = "payment.after_close", _("Paid after the case closed")
    PAYMENT_ATTEMPTS_CANCELLED = "payment.attempts_cancelled", _("Pending payment attempts cancelled")
    PAYMENT_OUTCOME_UNKNOWN = "payment.outcome_unknown", _("No answer from the gateway")
    PAYMENT_LATE_CHARGE = "payment.late_charge", _("Charged after the invoice closed; refunding")
    PAYMENT_LATE_CHARGE_HELD = "payment.late_charge_held", _("Charged after the invoice closed; held")
    PAYMENT_REFUNDED = "payment.refunded", _("Late charge refunded")
    PAYMENT_REFUND_FAILED = "payment.refund_failed", _("Refund failed")
    PAYMENT_REFUND_UNKNOWN = "payment.refund_unknown", _("No answer from the gateway on a refund")
    PAYMENT_RETRY_REQUESTED = "payment.retry_requested", _("Retry requested by staff")
    PAYMENT_RETRY_AFTER_METHOD_UPDATE = "payment.retry_after_method_update", _("Retry with a new payment method")
    PAYMENT_PORTAL_PAY = "payment.portal_pay", _("Paid now from the portal")
    # Messages: queued by a step, then what the outbox and the provider report (for_message)
    MESSAGE_QUEUED = "message.queued", _("Message queued")
    MESSAGE_CONSOLIDATED = "message.consolidated", _("Covered by another invoice's message")
    MESSAGE_SKIPPED = "message.skipped", _("Message skipped")
    MESSAGE_SENT = "message.sent", _("Message sent")
    MESSAGE_FAILED = "message.failed", _("Message failed")
    MESSAGE_UNKNOWN = "message.unknown", _("Message outcome unknown")
    MESSAGE_RESENT = "message.resent", _("Message resent")
    MESSAGE_DEFERRED = "message.deferred", _("Message deferred")
    MESSAGE_MERGED = "message.merged", _("Message merged")
    MESSAGE_REROUTED = "message.rerouted", _("Message sent on another channel")
    MESSAGE_REJECTED = "message.rejected", _("Message rejected")
    MESSAGE_BOUNCED = "message.bounced", _("Message bounced")
    MESSAGE_DELIVERED = "message.delivered", _("Message delivered")
    MESSAGE_AUTORESPONDED = "message.autoresponded", _("Automatic reply")
    MESSAGE_OPENED = "message.opened", _("Message opened")
    MESSAGE_CLICKED = "message.clicked", _("Link clicked")
    MESSAGE_COMPLAINED = "message.complained", _("Spam complaint")
    MESSAGE_UNSUBSCRIBED = "message.unsubscribed", _("Unsubscribed")
    MESSAGE_SUBSCRIBED = "message.subscribed", _("Subscribed")
    MESSAGES_CANCELLED = "messages.cancelled", _("Unsent messages cancelled")
    # The customer and the invoice
    CUSTOMER_SUSPENDED = "customer.suspended", _("Service suspended")
    CUSTOMER_REINSTATED = "customer.reinstated", _("Service reinstated")
    CUSTOMER_PAYMENT_METHOD_UPDATED = "customer.payment_method_updated", _("New payment method")
    CUSTOMER_PREFERENCES = "customer.preferences", _("Communication preferences changed")
    CUSTOMER_ERASED = "customer.erased", _("Personal data erased")
    INVOICE_UNCOLLECTIBLE = "invoice.uncollectible", _("Invoice marked uncollectible")
    # Staff work queue
    WORKITEM_CREATED = "workitem.created", _("Work item created")
    WORKITEM_ASSIGNED = "workitem.assigned", _("Work item assigned")
    WORKITEM_COMMENTED = "workitem.commented", _("Work item commented")
    WORKITEM_SNOOZED = "workitem.snoozed", _("Work item snoozed")
    WORKITEM_DONE = "workitem.done", _("Work item done")
    WORKITEM_REOPENED = "workitem.reopened", _("Work item reopened")
    # Late fees
    FEE_ADDED = "fee.added", _("Fees added")
    FEE_INTEREST_FINAL = "fee.interest_final", _("Interest stopped")
    FEE_WAIVED = "fee.waived", _("Fee waived")
    # Payment plans
    PLAN_REQUESTED = "plan.requested", _("Payment plan requested")
    PLAN_ACTIVATED = "plan.activated", _("Payment plan active")
    PLAN_REJECTED = "plan.rejected", _("Payment plan rejected")
    PLAN_CLOSED = "plan.closed", _("Payment plan request closed")
    PLAN_INSTALMENT_PAID = "plan.instalment_paid", _("Instalment paid")
    PLAN_INSTALMENT_CANCELLED = "plan.instalment_cancelled", _("Instalment cancelled")
    PLAN_DEFAULTED = "plan.defaulted", _("Instalment missed; dunning resumes")

    @classmethod
    def for_message(cls, event: str) -> str:
        """The kind of what the outbox or a provider reported about a message ("bounced" ->
        message.bounced). An event type a provider adds later is still recorded, under its own name."""
        kind = f"message.{event}"
        return cls(kind) if kind in cls._value2member_map_ else kind


# The columns of an entry(), in order.
COLUMNS = ("case_id", "kind", "message", "step_id", "payload", "at", "actor_id", "actor_label", "attempt_id")


def actor_label(actor) -> str:
    """Who acted, as the timeline names them: a user's username, a label such as 'api:key-name', or
    'system' (None)."""
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor[:100]
    return (actor.get_username() or str(actor.pk))[:100]


def entry(case_id: int, kind: str, message: str = "", *, at: datetime, actor=None, payload: dict | None = None,
          step_id: int | None = None, attempt_id: int | None = None) -> tuple:
    """One timeline row in COLUMNS order, for log_entries. ``actor``: a user, a label or None (see
    actor_label)."""
    actor_id = None if actor is None or isinstance(actor, str) else actor.pk
    return (case_id, kind, message[:255], step_id, payload or {}, at, actor_id, actor_label(actor), attempt_id)


def log_entries(entries: Sequence[tuple]) -> None:
    """Write timeline rows (entry() tuples), one query for any number; as column tuples rather than
    model instances, since the engine writes several per case (core.bulk.insert_rows)."""
    bulk.insert_rows(CaseEvent, COLUMNS, entries)


def log(case: DunningCase, kind: str, message: str = "", *, actor=None, at: datetime | None = None,
        payload: dict | None = None, step: CampaignStep | None = None,
        attempt: PaymentAttempt | None = None) -> None:
    """Write one event on the case's timeline."""
    log_entries([entry(case.pk, kind, message, at=at or timezone.now(), actor=actor, payload=payload,
                       step_id=step.pk if step is not None else None,
                       attempt_id=attempt.pk if attempt is not None else None)])
