"""A payment gateway's webhook events, read into the facts integrations.inbound applies.

Each event is applied at most once: it is stored in the inbox (integrations.InboundEvent, with the
gateway as source; unique per source and event id) in the same transaction as its effects, so a
replay finds the row and does nothing. Deliveries out of order are safe: a payment failure for an
invoice already paid opens no case; an older update of a payment method or customer than the last
one applied is ignored; a payment reported by both ``invoice.paid`` and ``payment_intent.succeeded``
is counted once (keyed by the PaymentIntent). Charges a new method triggers (the retry of the open
invoices) run in a worker after the commit.
"""

from __future__ import annotations

import datetime
import logging

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import attempts
from billing.gateways import ChargeResult, GatewayEvent, get_gateway_by_name
from billing.models import Invoice, PaymentAttempt
from billing.money import from_minor_units
from customers import services as customers
from customers.models import Customer, PaymentMethod
from dunning import payments
from integrations import inbound
from integrations.models import InboundEvent

logger = logging.getLogger(__name__)
E = GatewayEvent
ORDERED_KINDS = (E.METHOD_UPDATED, E.CUSTOMER_UPDATED)


def handle(event: GatewayEvent, gateway: str) -> str:
    """Apply one event; returns what happened (also stored on its inbox row, ``result["message"]``)."""
    created = datetime.datetime.fromtimestamp(event.created, tz=datetime.UTC) if event.created else None
    with transaction.atomic():
        try:
            with transaction.atomic():
                row = InboundEvent.objects.create(source=gateway, event_id=event.event_id, kind=event.event_type,
                                                  object_id=event.object_id, object_created=created,
                                                  status=InboundEvent.Status.APPLIED, applied_at=timezone.now())
        except IntegrityError:
            return "duplicate: already processed"
        if event.kind in ORDERED_KINDS and created and InboundEvent.objects.filter(
            source=gateway, object_id=event.object_id, kind=event.event_type, object_created__gt=created
        ).exists():
            result = "stale: a newer update was already applied"
        else:
            try:
                result = HANDLERS.get(event.kind, _ignore)(event, gateway, created or timezone.now(), row)
            except ValidationError as exc:  # e.g. a token saved for another customer: nothing was written
                result = f"ignored: {' '.join(exc.messages)}"
        row.result = {"message": result}
        row.save(update_fields=["result"])
    return result


def _ignore(event, gateway, at, row) -> str:
    return f"ignored: {event.event_type}"


def _invoice(external_id: str) -> Invoice | None:
    return Invoice.objects.select_related("customer").filter(external_id=external_id).first() if external_id else None


def _own_attempt(event: GatewayEvent) -> PaymentAttempt | None:
    """The attempt we made ourselves for this PaymentIntent, by metadata or by reference."""
    attempt_id = (event.data.get("metadata") or {}).get("attempt")
    pi = event.data.get("payment_intent")
    if attempt_id and str(attempt_id).isdigit():
        found = PaymentAttempt.objects.filter(pk=int(attempt_id)).first()
        if found:
            return found
    return PaymentAttempt.objects.filter(gateway_reference=pi).first() if pi else None


def _payment_received(event: GatewayEvent, gateway: str, at, amount_minor: int) -> str:
    own = _own_attempt(event)
    if own is not None:
        if own.outcome == PaymentAttempt.Outcome.PENDING:
            # Reconciles an attempt whose answer was lost (timeout): settled once, never charged again.
            attempts.settle(own, ChargeResult(True, reference=event.data.get("payment_intent", "")),
                            payments.SETTLEMENT, at=at)
            return f"attempt {own.pk} settled as paid"
        return f"attempt {own.pk} already settled"
    invoice = _invoice(event.data.get("invoice", ""))
    if invoice is None:
        return "ignored: unknown invoice"
    amount = from_minor_units(amount_minor, invoice.currency)
    pi = event.data.get("payment_intent")
    key = f"{gateway}:pi:{pi}" if pi else f"{gateway}:invoice-paid:{invoice.external_id}"
    # invoice.paid carries the invoice's cumulative total; either report may repeat the other's money.
    received = inbound.payment_received(
        invoice, None if event.kind == E.INVOICE_PAID else amount,
        paid_total=amount if event.kind == E.INVOICE_PAID else None, up_to_balance=True, idempotency_key=key,
        reference=pi or "", actor=f"{gateway}:webhook", at=at,
    )
    if received.attempt is None:
        return "ignored: nothing left to pay"
    if not received.created:
        return "ignored: payment already recorded"
    return f"payment of {received.attempt.amount} {invoice.currency} recorded on {invoice.number}"


def on_invoice_paid(event, gateway, at, row) -> str:
    return _payment_received(event, gateway, at, event.data.get("amount_paid") or 0)


def on_payment_succeeded(event, gateway, at, row) -> str:
    return _payment_received(event, gateway, at, event.data.get("amount_received") or 0)


def on_payment_failed(event, gateway, at, row) -> str:
    own = _own_attempt(event)
    if own is None:
        return "ignored: not our payment (invoice.payment_failed covers the billing system's own)"
    if own.outcome != PaymentAttempt.Outcome.PENDING:
        return f"attempt {own.pk} already settled"
    d = event.data
    attempts.settle(own, ChargeResult(False, reference=d.get("payment_intent", ""),
                                      decline_code=d.get("decline_code") or "generic_decline",
                                      network_code=d.get("network_code", ""),
                                      advice_code=d.get("advice_code", ""),
                                      message=d.get("message", "")[:255]), payments.SETTLEMENT, at=at)
    return f"attempt {own.pk} settled as declined"


def on_invoice_payment_failed(event, gateway, at, row) -> str:
    d = event.data
    invoice = _invoice(d.get("invoice", ""))
    if invoice is None:
        return "ignored: unknown invoice"
    method = PaymentMethod.objects.filter(gateway=gateway, token=d.get("payment_method")).first() \
        if d.get("payment_method") else None
    failure = inbound.Failure(
        invoice.pk, at=at, decline_code=d.get("decline_code") or "generic_decline",
        idempotency_key=f"{gateway}:invoice-failed:{invoice.external_id}:{d.get('attempt_count') or event.event_id}",
        message=d.get("message", ""), reference=d.get("payment_intent", ""), network_code=d.get("network_code", ""),
        advice_code=d.get("advice_code", ""), payment_method=method, gateway=gateway,
    )
    [outcome] = inbound.payments_failed([failure], actor=f"{gateway}:webhook")
    if outcome.duplicate:
        return "ignored: failure already recorded"
    if outcome.error is not None:
        return f"ignored: {outcome.error}"  # e.g. a late failure after the payment went through
    return (f"case #{outcome.case.pk} {'opened' if outcome.created else 'noted the failure'} "
            f"({outcome.attempt.decline_class})")


def refresh_payment_method(method: PaymentMethod) -> bool:
    """Ask the gateway for a saved method's brand, last 4 and expiry (staff action, or a missed webhook).
    A changed card is retried on the open invoices once, after the commit. Returns whether it changed."""
    details = get_gateway_by_name(method.gateway).retrieve_method(method.token)
    changed = customers.update_details(method, **{name: getattr(details, name) for name in customers.DETAIL_FIELDS})
    if changed:
        inbound.retry_after_commit(method, actor="sync")
    return changed


def on_method_updated(event, gateway, at, row) -> str:
    method = PaymentMethod.objects.filter(gateway=gateway, token=event.data.get("payment_method")).first()
    if method is None:
        return "ignored: unknown payment method"
    if inbound.method_changed(method, event.data.get("details") or {}, event_id=row.pk):
        return f"payment method {method.pk} updated; open invoices retried"
    return f"payment method {method.pk}: nothing changed"


def on_method_added(event, gateway, at, row) -> str:
    d = event.data
    customer = Customer.objects.filter(external_id=d.get("customer")).first() if d.get("customer") else None
    if customer is None or not d.get("payment_method"):
        return "ignored: unknown customer"
    details = d.get("details") or get_gateway_by_name(gateway).retrieve_method(d["payment_method"]).__dict__
    saved = inbound.method_added(customer, gateway=gateway, token=d["payment_method"], details=details,
                                 event_id=row.pk)
    return f"payment method {saved.method.pk} is now the default; open invoices retried"


def on_customer_updated(event, gateway, at, row) -> str:
    d = event.data
    customer = Customer.objects.filter(external_id=d.get("customer")).first()
    if customer is None:
        return "ignored: unknown customer"
    token = d.get("default_payment_method")
    method = PaymentMethod.objects.filter(customer=customer, gateway=gateway, token=token,
                                          detached_at__isnull=True).first() if token else None
    changes = inbound.customer_updated(customer, email=d.get("email") or "", name=d.get("name") or "",
                                       default_method=method, event_id=row.pk)
    return f"customer updated: {', '.join(changes) or 'nothing changed'}"


HANDLERS = {
    E.INVOICE_PAID: on_invoice_paid,
    E.PAYMENT_SUCCEEDED: on_payment_succeeded,
    E.PAYMENT_FAILED: on_payment_failed,
    E.INVOICE_PAYMENT_FAILED: on_invoice_payment_failed,
    E.METHOD_UPDATED: on_method_updated,
    E.METHOD_ADDED: on_method_added,
    E.CUSTOMER_UPDATED: on_customer_updated,
}
