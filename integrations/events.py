"""Payment events from the merchant's billing system, applied through the dunning services.

Each event carries the client's own id and is applied once: a repeated id returns the first result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from billing.refunds import apply_refund
from customers.models import Customer, PaymentMethod
from dunning import services as dunning
from integrations.models import ApiKey, PaymentEvent


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
    """Apply one event, or return the stored result of an earlier event with the same id."""
    actor = api_key.actor_label if api_key else "api"
    try:
        with transaction.atomic():
            # The row is claimed first: a concurrent request with the same id waits here, then fails
            # on the unique id and returns the stored result below.
            event = PaymentEvent.objects.create(event_id=event_id, kind=kind, api_key=api_key,
                                                payload=_jsonable(data))
            event.result = HANDLERS[kind](event_id, data, actor)
            event.save(update_fields=["result"])
    except IntegrityError:
        existing = PaymentEvent.objects.filter(event_id=event_id).first()
        if existing is None:
            raise
        if existing.kind != kind:
            raise dunning.DunningError(f"Event {event_id} was already received as {existing.kind}") from None
        return EventOutcome(existing, True)
    if kind in AFTER_COMMIT:
        # Gateway calls run after the commit, outside every transaction and lock, in a worker; each
        # charge is keyed by method and invoice, so a re-delivered task never charges twice.
        from django_q.tasks import async_task

        transaction.on_commit(lambda: async_task(AFTER_COMMIT[kind], event.pk, actor))
    return EventOutcome(event, False)


def _jsonable(data: dict) -> dict:
    return {k: (str(v) if isinstance(v, (Decimal, datetime)) else v) for k, v in data.items()}


def _payment_failed(event_id: str, data: dict, actor: str) -> dict:
    invoice = _invoice(data["invoice"])
    at = data.get("occurred_at") or timezone.now()
    attempt = PaymentAttempt.objects.create(
        invoice=invoice, amount=invoice.amount_remaining, currency=invoice.currency,
        outcome=PaymentAttempt.Outcome.FAILED, source=PaymentAttempt.Source.EXTERNAL,
        decline_code=data.get("decline_code", ""), message=data.get("message", "")[:255],
        gateway_reference=data.get("reference", ""), idempotency_key=f"event:{event_id}", completed_at=at,
    )
    case, created = dunning.open_case(invoice, failed_at=at, decline_code=data.get("decline_code", ""),
                                      attempt=attempt, actor=actor)
    return {"case": case.pk, "case_created": created, "attempt": attempt.pk}


def _payment_succeeded(event_id: str, data: dict, actor: str) -> dict:
    invoice = _invoice(data["invoice"])
    amount = data.get("amount")
    amount = invoice.amount_remaining if amount is None else amount
    if amount <= 0:
        raise ValidationError({"amount": ["Nothing is left to pay on this invoice; send the amount received."]})
    attempt, _created = billing.record_external_payment(
        invoice, amount, source=PaymentAttempt.Source.EXTERNAL, idempotency_key=f"event:{event_id}",
        reference=data.get("reference", ""),
    )
    case = dunning.record_payment(invoice, attempt.amount, attempt=attempt, actor=actor,
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
    attempts = dunning.retry_after_method_update(method.customer, method, actor=actor,
                                                 source=PaymentAttempt.Source.EXTERNAL)
    retries = [{"attempt": a.pk, "invoice": a.invoice.external_id, "outcome": a.outcome} for a in attempts]
    PaymentEvent.objects.filter(pk=event_id).update(result={**event.result, "retries": retries})
    return retries


HANDLERS = {
    PaymentEvent.Kind.PAYMENT_FAILED: _payment_failed,
    PaymentEvent.Kind.PAYMENT_SUCCEEDED: _payment_succeeded,
    PaymentEvent.Kind.REFUNDED: _refunded,
    PaymentEvent.Kind.PAYMENT_METHOD_UPDATED: _payment_method_updated,
}
AFTER_COMMIT = {PaymentEvent.Kind.PAYMENT_METHOD_UPDATED: "integrations.events.retry_with_new_method"}
