"""Payment events from the merchant's billing system (POST /api/v1/payment-events/), stored once in
the inbox (integrations.InboundEvent, source "api") and applied through integrations.inbound.

Each event carries the client's own id and is applied once: a repeated id returns the stored event.
payment_failed events are queued (pending) and applied by workers in batches (``drain``); the
other kinds are applied by the request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_q.tasks import async_task

from billing.models import Invoice, PaymentAttempt
from customers.models import Customer
from dunning.errors import DunningError
from integrations import inbound
from integrations.models import ApiKey, InboundEvent

logger = logging.getLogger(__name__)


@dataclass
class EventOutcome:
    event: InboundEvent
    duplicate: bool


def _invoice(external_id: str) -> Invoice:
    try:
        return Invoice.objects.get(external_id=external_id)
    except Invoice.DoesNotExist:
        raise ValidationError({"invoice": [f"No invoice with external id {external_id}."]}) from None


def ingest(event_id: str, kind: str, data: dict, *, api_key: ApiKey | None = None) -> EventOutcome:
    """Take one event, or return the stored event with the same id.

    payment_failed is queued (pending) and applied by a worker within seconds; the other kinds are
    applied now, in the caller's transaction."""
    if kind == InboundEvent.Kind.PAYMENT_FAILED:
        return _queue(event_id, kind, data, api_key)
    actor = api_key.actor_label if api_key else "api"
    try:
        with transaction.atomic():
            # The row is claimed first: a concurrent request with the same id waits here, then fails
            # on the unique id and returns the stored result below.
            event = InboundEvent.objects.create(event_id=event_id, kind=kind, api_key=api_key,
                                                payload=_jsonable(data), status=InboundEvent.Status.APPLIED)
            event.result = HANDLERS[kind](event, data, actor)
            event.applied_at = timezone.now()
            event.save(update_fields=["result", "applied_at"])
    except IntegrityError:
        return _existing(event_id, kind)
    return EventOutcome(event, False)


def _existing(event_id: str, kind: str) -> EventOutcome:
    existing = InboundEvent.objects.filter(source=InboundEvent.API, event_id=event_id).first()
    if existing is None:
        raise RuntimeError(f"Event {event_id} collided but cannot be read")  # a server error: retry later
    if existing.kind != kind:
        raise DunningError(f"Event {event_id} was already received as {existing.kind}") from None
    return EventOutcome(existing, True)


def _queue(event_id: str, kind: str, data: dict, api_key: ApiKey | None) -> EventOutcome:
    """Store a pending event and wake the worker after the commit. An unknown invoice is refused
    here, so that a typo is a 400 and not a rejected event later.

    The busiest request of the API, so one statement: the invoice is looked up inside the INSERT and a
    repeated id inserts nothing (ON CONFLICT DO NOTHING, so no savepoint either); only when no row
    comes back is it told apart whether the id was taken or the invoice is unknown.
    """
    event = InboundEvent(event_id=event_id, kind=kind, api_key=api_key, payload=_jsonable(data),
                         status=InboundEvent.Status.PENDING)
    fields = [f for f in InboundEvent._meta.concrete_fields if not f.primary_key and f.attname != "invoice_id"]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(event, add=True), connection) for f in fields]
    sql = (
        f"INSERT INTO {InboundEvent._meta.db_table} ({columns}, invoice_id) "  # noqa: S608 (names from the model)
        f"SELECT {', '.join(['%s'] * len(fields))}, id FROM {Invoice._meta.db_table} WHERE external_id = %s "
        "ON CONFLICT (source, event_id) DO NOTHING RETURNING id, invoice_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, data["invoice"]])
        row = cursor.fetchone()
    if row is None:
        if not Invoice.objects.filter(external_id=data["invoice"]).exists():
            raise ValidationError({"invoice": [f"No invoice with external id {data['invoice']}."]})
        return _existing(event_id, kind)
    event.pk, event.invoice_id = row
    event._state.adding = False
    transaction.on_commit(wake_worker)
    return EventOutcome(event, False)


def _jsonable(data: dict) -> dict:
    return {k: (str(v) if isinstance(v, (Decimal, datetime)) else v) for k, v in data.items()}


# --- The inbox worker ---------------------------------------------------------------------------

WAKE_KEY = "payment-events:wake"
MAX_TRIES = 5


def wake_worker() -> None:
    """Queue a drain task, at most once per PAYMENT_EVENTS_WAKE_SECONDS per cache: under a burst of
    events one worker drains them in batches instead of one task per event. The task keeps draining
    until that window is over, so an event whose wake-up was skipped is still picked up."""
    window = settings.PAYMENT_EVENTS_WAKE_SECONDS
    if window and not cache.add(WAKE_KEY, 1, timeout=window):
        return
    async_task("integrations.tasks.drain_payment_events", time.time() + window)


def drain(until: float | None = None, *, batch_size: int | None = None, poll: float = 0.2) -> int:
    """Apply pending events in batches until none is left and the time ``until`` (epoch seconds) has
    passed; returns how many were settled (applied or rejected). Several drains may run at once: each
    claims its batch with SKIP LOCKED. An event that fails is tried once per drain, so its MAX_TRIES
    are spread over later drains (the next wake-up, or the schedule a minute later)."""
    total, failed = 0, set()
    while True:
        claimed, settled = apply_pending(batch_size, skip=failed)
        total += settled
        if claimed:
            continue
        if until is None or time.time() >= until:
            return total
        time.sleep(poll)


def apply_pending(batch_size: int | None = None, *, skip: set[int] | None = None) -> tuple[int, int]:
    """Claim up to ``batch_size`` pending payment_failed events (oldest first, except the ids in
    ``skip``) and apply them: one transaction, a fixed number of queries (integrations.inbound.payments_failed).
    Returns (claimed, settled). If the batch fails as a whole, each event is tried on its own so that
    one bad event cannot hold back the others; a failing event stays pending, its id is added to
    ``skip``, and it is rejected after MAX_TRIES."""
    batch_size = batch_size or settings.PAYMENT_EVENTS_BATCH
    skip = skip if skip is not None else set()
    with transaction.atomic():
        events = list(
            InboundEvent.objects.select_for_update(skip_locked=True, of=("self",)).select_related("api_key")
            .filter(status=InboundEvent.Status.PENDING).exclude(pk__in=skip).order_by("id")[:batch_size]
        )
        if not events:
            return 0, 0
        fresh = [e for e in events if e.tries == 0]
        one_by_one = [e for e in events if e.tries]
        try:
            with transaction.atomic():
                _apply_failures(fresh)
        except Exception:
            logger.exception("A batch of %d payment events failed; applying them one by one", len(fresh))
            one_by_one = events
        settled = len(events)
        for event in one_by_one:
            try:
                with transaction.atomic():
                    _apply_failures([event])
            except Exception as exc:
                logger.exception("Payment event %s could not be applied", event.event_id)
                event.tries += 1
                update = {"tries": event.tries, "error": f"Could not be applied: {exc}"[:2000]}
                if event.tries >= MAX_TRIES:
                    update.update(status=InboundEvent.Status.REJECTED, applied_at=timezone.now())
                else:
                    skip.add(event.pk)
                    settled -= 1
                InboundEvent.objects.filter(pk=event.pk).update(**update)
    return len(events), settled


def _apply_failures(events: list[InboundEvent]) -> None:
    """Open (or update) the cases of these payment_failed events and store each event's outcome."""
    if not events:
        return
    now = timezone.now()
    by_actor: dict[str, list[InboundEvent]] = {}
    for event in events:
        by_actor.setdefault(event.api_key.actor_label if event.api_key else "api", []).append(event)
    for actor, group in by_actor.items():
        failures = []
        for event in group:
            data = event.payload
            failures.append(inbound.Failure(
                event.invoice_id or 0,
                at=parse_datetime(data["occurred_at"]) if data.get("occurred_at") else event.received_at,
                decline_code=data.get("decline_code", ""), idempotency_key=f"event:{event.event_id}",
                message=data.get("message", ""), reference=data.get("reference", "")))
        for event, outcome in zip(group, inbound.payments_failed(failures, actor=actor), strict=True):
            event.applied_at = now
            if outcome.error is not None:
                event.status, event.error, event.result = InboundEvent.Status.REJECTED, str(outcome.error), {}
            else:
                event.status, event.error = InboundEvent.Status.APPLIED, ""
                event.result = {"case": outcome.case.pk, "case_created": outcome.created,
                                "attempt": outcome.attempt.pk}
    InboundEvent.objects.bulk_update(events, ["status", "error", "result", "applied_at"])


# --- The kinds applied by the request -------------------------------------------------------------

def _payment_succeeded(event: InboundEvent, data: dict, actor: str) -> dict:
    received = inbound.payment_received(_invoice(data["invoice"]), data.get("amount"),
                                        idempotency_key=f"event:{event.event_id}",
                                        reference=data.get("reference", ""), actor=actor, at=data.get("occurred_at"))
    if received.attempt is None:
        raise ValidationError({"amount": ["Nothing is left to pay on this invoice; send the amount received."]})
    return {"attempt": received.attempt.pk, "case": received.case.pk if received.case else None,
            "invoice_status": received.invoice.status}


def _refunded(event: InboundEvent, data: dict, actor: str) -> dict:
    invoice = _invoice(data["invoice"])
    if data.get("amount") is None:
        raise ValidationError({"amount": ["A refund needs the amount given back."]})
    invoice = inbound.refunded(invoice, data["amount"])
    return {"invoice_status": invoice.status, "amount_paid": str(invoice.amount_paid)}


def _payment_method_updated(event: InboundEvent, data: dict, actor: str) -> dict:
    customer = Customer.objects.filter(external_id=data["customer"]).first()
    if customer is None:
        raise ValidationError({"customer": [f"No customer with external id {data['customer']}."]})
    pm = data["payment_method"]
    saved = inbound.method_added(customer, gateway=pm.get("gateway", "sandbox"), token=pm["token"], details=pm,
                                 actor=actor, source=PaymentAttempt.Source.EXTERNAL, event_id=event.pk)
    return {"payment_method": saved.method.pk, "retry_scheduled": True}


HANDLERS = {
    InboundEvent.Kind.PAYMENT_SUCCEEDED: _payment_succeeded,
    InboundEvent.Kind.REFUNDED: _refunded,
    InboundEvent.Kind.PAYMENT_METHOD_UPDATED: _payment_method_updated,
}
