"""Payment events from the merchant's billing system, applied through the dunning services.

Each event carries the client's own id and is applied once: a repeated id returns the stored event.
payment_failed events are queued (pending) and applied by workers in batches (``drain``); the
other kinds are applied by the request.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from psycopg.types.json import Jsonb

from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from billing.refunds import apply_refund
from core import jsonb
from customers.models import Customer, PaymentMethod
from dunning import cases, payments
from dunning.errors import DunningError
from integrations import fastsql
from integrations.models import ApiKey, PaymentEvent

logger = logging.getLogger(__name__)


@dataclass
class EventOutcome:
    event: PaymentEvent
    duplicate: bool


def _invoice(external_id: str) -> Invoice:
    invoice = Invoice.objects.select_related("customer").filter(external_id=external_id).first()
    if invoice is None:
        raise ValidationError({"invoice": [f"No invoice with external id {external_id}."]})
    return invoice


def ingest(event_id: str, kind: str, data: dict, *, api_key: ApiKey | None = None) -> EventOutcome:
    """Take one event, or return the stored event with the same id.

    payment_failed is queued (pending) and applied by a worker within seconds; the other kinds are
    applied now, in the caller's transaction."""
    if kind == PaymentEvent.Kind.PAYMENT_FAILED:
        return _queue(event_id, kind, data, api_key)
    actor = api_key.actor_label if api_key else "api"
    try:
        with transaction.atomic():
            # The row is claimed first: a concurrent request with the same id waits here, then fails
            # on the unique id and returns the stored result below.
            event = PaymentEvent.objects.create(event_id=event_id, kind=kind, api_key=api_key,
                                                payload=_jsonable(data), status=PaymentEvent.Status.APPLIED)
            event.result = HANDLERS[kind](event_id, data, actor)
            event.applied_at = timezone.now()
            event.save(update_fields=["result", "applied_at"])
    except IntegrityError:
        return _existing(event_id, kind)
    if kind in AFTER_COMMIT:
        # Gateway calls run after the commit, outside every transaction and lock, in a worker; each
        # charge is keyed by method and invoice, so a re-delivered task never charges twice.
        from django_q.tasks import async_task

        transaction.on_commit(lambda: async_task(AFTER_COMMIT[kind], event.pk, actor))
    return EventOutcome(event, False)


def _existing(event_id: str, kind: str) -> EventOutcome:
    existing = PaymentEvent.objects.filter(event_id=event_id).first()
    if existing is None:
        raise RuntimeError(f"Event {event_id} collided but cannot be read")  # a server error: retry later
    if existing.kind != kind:
        raise DunningError(f"Event {event_id} was already received as {existing.kind}") from None
    return EventOutcome(existing, True)


def _queue(event_id: str, kind: str, data: dict, api_key: ApiKey | None) -> EventOutcome:
    """Store a pending event and wake the worker after the commit. An unknown invoice is refused
    here, so that a typo is a 400 and not a rejected event later. (The API's usual path on PostgreSQL
    is queue_failure_with_key; this one answers what it leaves: repeats, unknown invoices, SQLite.)"""
    event = pending_failure(event_id, data, api_key)
    event.invoice_id = _invoice(data["invoice"]).pk
    try:
        with transaction.atomic():
            event.save(force_insert=True)
    except IntegrityError:
        return _existing(event_id, kind)
    transaction.on_commit(wake_worker)
    return EventOutcome(event, False)


@dataclass
class Claim:
    """The Idempotency-Key record to write with a queued event (see queue_failure_with_key)."""

    key: str
    request_hash: str
    method: str
    path: str


def pending_failure(event_id: str, data: dict, api_key: ApiKey | None) -> PaymentEvent:
    """The unsaved pending event for a payment_failed."""
    return PaymentEvent(event_id=event_id, kind=PaymentEvent.Kind.PAYMENT_FAILED, api_key=api_key,
                        payload=_jsonable(data), status=PaymentEvent.Status.PENDING, received_at=timezone.now())


@dataclass
class Queued:
    """What queue_failure_with_key reports besides success: when the API key was last used."""

    key_last_used_at: datetime | None


def queue_failure_with_key(event: PaymentEvent, claim: Claim, body: dict, *, status_code: int = 202,
                           health_check: bool = True) -> Queued | None:
    """PostgreSQL: store a pending payment_failed event (from pending_failure) and its finished
    Idempotency-Key record (``status_code`` and ``body``) in one statement, the busiest write of the
    API. Returns None, having written nothing, when the ordinary path must answer instead: the event
    id was received before (duplicate), the invoice is unknown (400), the key was used before (replay
    or 409), or the event's API key is no longer an unrevoked read-write key (401 or 403).

    The statement checks the API key itself, so a caller may have verified the key against a copy
    read earlier (integrations.api.fastpath) and a revocation still takes effect at once. The record
    is inserted only with the event, and without ON CONFLICT: a used key fails the whole statement,
    so the event is never stored without its record nor its record without the event.

    ``health_check=False`` skips Django's check of a reused connection (a round trip): for callers
    that handle a broken connection themselves."""
    from integrations.models import IdempotencyRecord

    records, table, invoices, keys = (IdempotencyRecord._meta.db_table, PaymentEvent._meta.db_table,
                                      Invoice._meta.db_table, ApiKey._meta.db_table)
    sql = (
        f"WITH k AS (SELECT id, last_used_at FROM {keys} WHERE id = %s AND revoked_at IS NULL "  # noqa: S608
        f"AND scope = %s), "
        f"ev AS (INSERT INTO {table} (event_id, kind, api_key_id, payload, result, received_at, "
        f"status, invoice_id, error, tries) SELECT %s, %s, k.id, %s, '{{}}', %s, %s, i.id, '', 0 "
        f"FROM {invoices} i, k WHERE i.external_id = %s ON CONFLICT (event_id) DO NOTHING "
        "RETURNING id, invoice_id), "
        f"idem AS (INSERT INTO {records} (api_key_id, key, method, path, request_hash, created_at, status_code, "
        "response_body) SELECT %s, %s, %s, %s, %s, %s, %s, %s FROM ev RETURNING id) "
        "SELECT ev.id, ev.invoice_id, k.last_used_at FROM ev, idem, k"
    )
    params = [event.api_key_id, ApiKey.Scope.READ_WRITE, event.event_id, event.kind, Jsonb(event.payload),
              event.received_at, event.status, event.payload["invoice"], event.api_key_id, claim.key, claim.method,
              claim.path[:255], claim.request_hash, event.received_at, status_code, Jsonb(body, dumps=jsonb.dumps)]
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            row = fastsql.fetchone(sql, params, health_check=health_check)
    except IntegrityError:
        return None  # the key was used: its record answers (replay, or 409 for another request)
    if row is None:
        return None
    event.pk, event.invoice_id, last_used_at = row
    event._state.adding = False
    transaction.on_commit(wake_worker)
    return Queued(last_used_at)


def _jsonable(data: dict) -> dict:
    return {k: (str(v) if isinstance(v, (Decimal, datetime)) else v) for k, v in data.items()}


# --- The inbox worker ---------------------------------------------------------------------------

WAKE_KEY = "payment-events:wake"
MAX_TRIES = 5


def wake_worker() -> None:
    """Queue a drain task, at most once per PAYMENT_EVENTS_WAKE_SECONDS per cache: under a burst of
    events one worker drains them in batches instead of one task per event. The task keeps draining
    until that window is over, so an event whose wake-up was skipped is still picked up."""
    from django_q.tasks import async_task

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
    ``skip``) and apply them: one transaction, a fixed number of queries (dunning.cases.open_cases).
    Returns (claimed, settled). If the batch fails as a whole, each event is tried on its own so that
    one bad event cannot hold back the others; a failing event stays pending, its id is added to
    ``skip``, and it is rejected after MAX_TRIES."""
    batch_size = batch_size or settings.PAYMENT_EVENTS_BATCH
    skip = skip if skip is not None else set()
    with transaction.atomic():
        events = list(
            PaymentEvent.objects.select_for_update(skip_locked=True, of=("self",)).select_related("api_key")
            .filter(status=PaymentEvent.Status.PENDING).exclude(pk__in=skip).order_by("id")[:batch_size]
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
                    update.update(status=PaymentEvent.Status.REJECTED, applied_at=timezone.now())
                else:
                    skip.add(event.pk)
                    settled -= 1
                PaymentEvent.objects.filter(pk=event.pk).update(**update)
    return len(events), settled


def _apply_failures(events: list[PaymentEvent]) -> None:
    """Open (or update) the cases of these payment_failed events and store each event's outcome."""
    if not events:
        return
    now = timezone.now()
    by_actor: dict[str, list[PaymentEvent]] = {}
    for event in events:
        by_actor.setdefault(event.api_key.actor_label if event.api_key else "api", []).append(event)
    for actor, group in by_actor.items():
        failures = []
        for event in group:
            data = event.payload
            at = parse_datetime(data["occurred_at"]) if data.get("occurred_at") else event.received_at
            decline_code = data.get("decline_code", "")
            failures.append(cases.FailedPayment(
                event.invoice_id or 0, failed_at=at, decline_code=decline_code,
                record_attempt={"outcome": PaymentAttempt.Outcome.FAILED, "source": PaymentAttempt.Source.EXTERNAL,
                                "decline_code": decline_code, "message": data.get("message", "")[:255],
                                "gateway_reference": data.get("reference", ""),
                                "idempotency_key": f"event:{event.event_id}", "completed_at": at}))
        for event, opened in zip(group, cases.open_cases(failures, actor=actor), strict=True):
            event.applied_at = now
            if opened.error is not None:
                event.status, event.error, event.result = PaymentEvent.Status.REJECTED, str(opened.error), {}
            else:
                event.status, event.error = PaymentEvent.Status.APPLIED, ""
                event.result = {"case": opened.case.pk, "case_created": opened.created,
                                "attempt": opened.attempt.pk}
    PaymentEvent.objects.bulk_update(events, ["status", "error", "result", "applied_at"])


def _payment_succeeded(event_id: str, data: dict, actor: str) -> dict:
    # Locked before the default amount (the balance) is read: a charge of ours settling meanwhile
    # leaves nothing to pay, rather than this report paying the invoice a second time. Its open
    # case first: the lock order of every payment (dunning.cases.lock_open_case).
    invoice_id = _invoice(data["invoice"]).pk
    cases.lock_open_case(invoice_id)
    invoice = Invoice.objects.select_for_update(of=("self",)).select_related("customer").get(pk=invoice_id)
    amount = data.get("amount")
    amount = invoice.amount_remaining if amount is None else amount
    if amount <= 0:
        raise ValidationError({"amount": ["Nothing is left to pay on this invoice; send the amount received."]})
    attempt, _created = billing.record_external_payment(
        invoice, amount, source=PaymentAttempt.Source.EXTERNAL, idempotency_key=f"event:{event_id}",
        reference=data.get("reference", ""),
    )
    case = payments.record_payment(invoice, attempt.amount, attempt=attempt, actor=actor,
                                  at=data.get("occurred_at"))
    invoice.refresh_from_db()
    return {"attempt": attempt.pk, "case": case.pk if case else None, "invoice_status": invoice.status}


def _refunded(event_id: str, data: dict, actor: str) -> dict:
    invoice = _invoice(data["invoice"])
    if data.get("amount") is None:
        raise ValidationError({"amount": ["A refund needs the amount given back."]})
    invoice = apply_refund(invoice.pk, data["amount"])
    return {"invoice_status": invoice.status, "amount_paid": str(invoice.amount_paid)}


def _payment_method_updated(event_id: str, data: dict, actor: str) -> dict:
    customer = Customer.objects.filter(external_id=data["customer"]).first()
    if customer is None:
        raise ValidationError({"customer": [f"No customer with external id {data['customer']}."]})
    pm = data["payment_method"]
    method = PaymentMethod.objects.filter(gateway=pm.get("gateway", "sandbox"), token=pm["token"]).first()
    if method is not None and method.customer_id != customer.pk:
        raise ValidationError({"payment_method": ["This token belongs to another customer."]})
    PaymentMethod.objects.filter(customer=customer, is_default=True).exclude(
        pk=method.pk if method else None).update(is_default=False)
    fields = {k: pm[k] for k in ("kind", "brand", "last4", "exp_month", "exp_year") if pm.get(k) not in (None, "")}
    if method is None:
        method = PaymentMethod(customer=customer, gateway=pm.get("gateway", "sandbox"), token=pm["token"])
    for name, value in fields.items():
        setattr(method, name, value)
    method.is_default, method.detached_at = True, None
    method.full_clean(validate_unique=False, validate_constraints=False)
    method.save()
    return {"payment_method": method.pk, "retry_scheduled": True}


def retry_with_new_method(event_id: int, actor: str) -> list[dict]:
    """Task: charge every open case of the customer with the new method; the outcome goes on the event."""
    event = PaymentEvent.objects.get(pk=event_id)
    method = PaymentMethod.objects.select_related("customer").get(pk=event.result["payment_method"])
    attempts = payments.retry_after_method_update(method.customer, method, actor=actor,
                                                 source=PaymentAttempt.Source.EXTERNAL)
    retries = [{"attempt": a.pk, "invoice": a.invoice.external_id, "outcome": a.outcome} for a in attempts]
    PaymentEvent.objects.filter(pk=event_id).update(result={**event.result, "retries": retries})
    return retries


HANDLERS = {
    PaymentEvent.Kind.PAYMENT_SUCCEEDED: _payment_succeeded,
    PaymentEvent.Kind.REFUNDED: _refunded,
    PaymentEvent.Kind.PAYMENT_METHOD_UPDATED: _payment_method_updated,
}
AFTER_COMMIT = {PaymentEvent.Kind.PAYMENT_METHOD_UPDATED: "integrations.events.retry_with_new_method"}
