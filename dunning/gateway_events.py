"""What a gateway's webhook event does to invoices, cases and saved methods.

Each event is applied at most once: its id goes into billing.WebhookEvent (unique) in the same
transaction as its effects, so a replay finds the row and does nothing. Deliveries out of order are
safe: a payment failure for an invoice already paid opens no case; an older update of a payment
method or customer than the last one applied is ignored; a payment reported by both
``invoice.paid`` and ``payment_intent.succeeded`` is counted once (keyed by the PaymentIntent).
Charges a new method triggers (the immediate retry of open invoices) run after the commit.
"""

from __future__ import annotations

import datetime
import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import attempts
from billing import services as billing
from billing.declines import classify_attempt
from billing.gateways import ChargeResult, GatewayEvent, MethodDetails
from billing.models import Invoice, PaymentAttempt, WebhookEvent
from billing.money import from_minor_units
from customers.models import Customer, PaymentMethod
from dunning import payments, retries
from dunning.cases import open_case
from dunning.errors import DunningError

logger = logging.getLogger(__name__)
E = GatewayEvent
ORDERED_KINDS = (E.METHOD_UPDATED, E.CUSTOMER_UPDATED)


def handle(event: GatewayEvent, gateway: str) -> str:
    """Apply one event; returns what happened (also stored on the WebhookEvent row)."""
    created = datetime.datetime.fromtimestamp(event.created, tz=datetime.UTC) if event.created else None
    after_commit: list = []
    with transaction.atomic():
        try:
            with transaction.atomic():
                row = WebhookEvent.objects.create(gateway=gateway, event_id=event.event_id, type=event.event_type,
                                                  object_id=event.object_id, object_created=created)
        except IntegrityError:
            return "duplicate: already processed"
        if event.kind in ORDERED_KINDS and created and WebhookEvent.objects.filter(
            gateway=gateway, object_id=event.object_id, type=event.event_type, object_created__gt=created
        ).exists():
            result = "stale: a newer update was already applied"
        else:
            result = HANDLERS.get(event.kind, _ignore)(event, gateway, created or timezone.now(), after_commit)
        row.result = result[:255]
        row.save(update_fields=["result"])
    for func in after_commit:
        func()
    return result


def _ignore(event, gateway, at, after_commit) -> str:
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
    if event.kind == E.INVOICE_PAID:
        amount = amount - invoice.amount_paid  # invoice.paid carries the invoice's cumulative total
    amount = min(amount, invoice.amount_remaining)
    if amount <= 0:
        return "ignored: nothing left to pay"
    key = f"{gateway}:pi:{event.data['payment_intent']}" if event.data.get("payment_intent") else \
        f"{gateway}:invoice-paid:{invoice.external_id}"
    attempt, created = billing.record_external_payment(
        invoice, amount, source=PaymentAttempt.Source.EXTERNAL, idempotency_key=key,
        reference=event.data.get("payment_intent", ""),
    )
    if not created:
        return "ignored: payment already recorded"
    payments.record_payment(invoice, attempt.amount, attempt=attempt, actor=f"{gateway}:webhook", at=at)
    return f"payment of {attempt.amount} {invoice.currency} recorded on {invoice.number}"


def on_invoice_paid(event, gateway, at, after_commit) -> str:
    return _payment_received(event, gateway, at, event.data.get("amount_paid") or 0)


def on_payment_succeeded(event, gateway, at, after_commit) -> str:
    return _payment_received(event, gateway, at, event.data.get("amount_received") or 0)


def on_payment_failed(event, gateway, at, after_commit) -> str:
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


def on_invoice_payment_failed(event, gateway, at, after_commit) -> str:
    d = event.data
    invoice = _invoice(d.get("invoice", ""))
    if invoice is None:
        return "ignored: unknown invoice"
    if invoice.status != Invoice.Status.OPEN or invoice.amount_remaining <= 0:
        return f"ignored: invoice is {invoice.status}"  # a late failure after the payment went through
    method = PaymentMethod.objects.filter(gateway=gateway, token=d.get("payment_method")).first() \
        if d.get("payment_method") else None
    key = f"{gateway}:invoice-failed:{invoice.external_id}:{d.get('attempt_count') or event.event_id}"
    attempt = PaymentAttempt(
        invoice=invoice, payment_method=method, amount=invoice.amount_remaining, currency=invoice.currency,
        source=PaymentAttempt.Source.EXTERNAL, outcome=PaymentAttempt.Outcome.FAILED, gateway=gateway,
        gateway_reference=d.get("payment_intent", ""), idempotency_key=key,
        decline_code=d.get("decline_code") or "generic_decline", network_code=d.get("network_code", "")[:8],
        advice_code=d.get("advice_code", "")[:8], message=d.get("message", "")[:255], completed_at=at,
    )
    if PaymentAttempt.objects.filter(idempotency_key=key).exists():
        return "ignored: failure already recorded"
    attempt.decline_class = classify_attempt(attempt, at=at)
    attempt.save()
    try:
        case, created = open_case(invoice, failed_at=at, decline_code=attempt.decline_code,
                                           attempt=attempt, actor=f"{gateway}:webhook")
    except DunningError as exc:
        return f"failure recorded, no case: {exc}"
    if not created:
        retries.after_decline(case, attempt, at=at)
    return f"case #{case.pk} {'opened' if created else 'noted the failure'} ({attempt.decline_class})"


def _apply_details(method: PaymentMethod, details: dict) -> bool:
    """Copy brand/last4/expiry; True if the card changed in a way that makes it worth retrying."""
    changed = False
    for field in ("brand", "last4", "exp_month", "exp_year"):
        value = details.get(field)
        if value not in (None, "") and getattr(method, field) != value:
            setattr(method, field, value)
            changed = True
    if changed:
        method.save(update_fields=["brand", "last4", "exp_month", "exp_year", "updated_at"])
    return changed


def _retry_after_commit(method: PaymentMethod, gateway: str, after_commit: list) -> None:
    """Charge the open invoices in a worker once the event is committed (the webhook answers at once)."""
    from django_q.tasks import async_task

    after_commit.append(lambda: async_task("dunning.tasks.retry_after_method_update", method.pk))


def refresh_payment_method(method: PaymentMethod) -> bool:
    """Ask the gateway for a saved method's brand, last 4 and expiry (staff action, or a missed webhook).
    A changed card is unblocked and the open invoices are retried once. Returns whether it changed."""
    from billing.gateways import get_gateway_by_name

    details = get_gateway_by_name(method.gateway).retrieve_method(method.token)
    changed = _apply_details(method, details.__dict__)
    if changed:
        payments.retry_after_method_update(method.customer, method, actor="sync")
    return changed


def on_method_updated(event, gateway, at, after_commit) -> str:
    method = PaymentMethod.objects.filter(gateway=gateway, token=event.data.get("payment_method")).first()
    if method is None:
        return "ignored: unknown payment method"
    if _apply_details(method, event.data.get("details") or {}) or method.charge_blocked_at:
        _retry_after_commit(method, gateway, after_commit)
        return f"payment method {method.pk} updated; open invoices retried"
    return f"payment method {method.pk}: nothing changed"


def on_method_added(event, gateway, at, after_commit) -> str:
    d = event.data
    customer = Customer.objects.filter(external_id=d.get("customer")).first() if d.get("customer") else None
    if customer is None or not d.get("payment_method"):
        return "ignored: unknown customer"
    details = d.get("details")
    if not details:
        from billing.gateways import get_gateway_by_name

        details = get_gateway_by_name(gateway).retrieve_method(d["payment_method"]).__dict__
    method = add_payment_method(customer, gateway, MethodDetails(**{**details, "token": d["payment_method"]}))
    _retry_after_commit(method, gateway, after_commit)
    return f"payment method {method.pk} is now the default; open invoices retried"


def add_payment_method(customer: Customer, gateway: str, details: MethodDetails) -> PaymentMethod:
    """Save (or refresh) a method from the gateway and make it the customer's default."""
    with transaction.atomic():
        Customer.objects.select_for_update().get(pk=customer.pk)
        method = PaymentMethod.objects.filter(gateway=gateway, token=details.token).first()
        PaymentMethod.objects.filter(customer=customer, is_default=True).exclude(
            pk=method.pk if method else None).update(is_default=False)
        if method is None:
            method = PaymentMethod.objects.create(
                customer=customer, gateway=gateway, token=details.token, kind=details.kind or "card",
                brand=details.brand, last4=details.last4, exp_month=details.exp_month, exp_year=details.exp_year,
                is_default=True,
            )
        else:
            _apply_details(method, details.__dict__)
            method.is_default, method.detached_at = True, None
            method.save(update_fields=["is_default", "detached_at", "updated_at"])
    return method


def on_customer_updated(event, gateway, at, after_commit) -> str:
    d = event.data
    customer = Customer.objects.filter(external_id=d.get("customer")).first()
    if customer is None:
        return "ignored: unknown customer"
    changes = []
    for field in ("email", "name"):
        if d.get(field) and getattr(customer, field) != d[field]:
            setattr(customer, field, d[field])
            changes.append(field)
    if changes:
        customer.save(update_fields=[*changes, "updated_at"])
    default = d.get("default_payment_method")
    if default:
        method = PaymentMethod.objects.filter(customer=customer, gateway=gateway, token=default,
                                              detached_at__isnull=True).first()
        if method is not None and not method.is_default:
            PaymentMethod.objects.filter(customer=customer, is_default=True).update(is_default=False)
            PaymentMethod.objects.filter(pk=method.pk).update(is_default=True)
            method.is_default = True
            _retry_after_commit(method, gateway, after_commit)
            changes.append("default payment method")
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
