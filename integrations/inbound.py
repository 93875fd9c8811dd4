"""External facts turned into the services that own them, whoever reports them: the merchant's
billing system (REST API events, integrations.events; invoice imports, integrations.imports) or a
payment gateway (signed webhooks, integrations.gateway_events).

Each caller parses its own format and stores its event once (integrations.InboundEvent); what the
fact then does is decided here, the same way for every source:

- a payment failed: a failed attempt recorded with the dunning case it opens, or noted on the open case;
- money was received: dunning.receipts.receive_payment (the attempt row, the invoice, the case);
- money was refunded: billing.refunds.apply_refund;
- a payment method was added or its card changed: customers.services saves it, and the customer's
  open invoices are retried once with it, after the commit, in a worker;
- a customer's details or default method changed: customers.services.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django_q.tasks import async_task

from billing.declines import classify_attempt
from billing.models import Invoice, PaymentAttempt
from billing.refunds import apply_refund
from customers import services as customers
from customers.models import Customer, PaymentMethod
from dunning import cases, receipts, retries
from dunning.errors import DunningError
from dunning.models import DunningCase


@dataclass
class Failure:
    """A payment that failed elsewhere. Without an idempotency key (an imported invoice flagged as
    failed) no attempt is recorded, only the case."""

    invoice_id: int
    at: datetime | None = None
    decline_code: str = ""
    idempotency_key: str = ""
    message: str = ""
    reference: str = ""
    network_code: str = ""
    advice_code: str = ""
    payment_method: PaymentMethod | None = None
    gateway: str = ""


@dataclass
class FailureOutcome:
    case: DunningCase | None = None
    created: bool = False
    attempt: PaymentAttempt | None = None
    error: DunningError | None = None
    duplicate: bool = False  # this failure's attempt was recorded before: nothing written


def payments_failed(failures: list[Failure], *, actor) -> list[FailureOutcome]:
    """Payments failed: for each, open a dunning case (or note the failure on the open one) with its
    failed attempt, classified by the decline table (a decline that rules out the named method blocks
    it). A fixed number of queries for any number of failures (dunning.cases.open_cases); a
    failure dunning refuses (invoice not open, excluded, no campaign) writes nothing and carries the
    error. A decline noted on a case already open is acted on at once (dunning.retries.after_decline)."""
    keys = [f.idempotency_key for f in failures if f.idempotency_key]
    seen = set(PaymentAttempt.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True)) \
        if keys else set()
    outcomes = [FailureOutcome(duplicate=f.idempotency_key in seen) for f in failures]
    todo = [k for k, f in enumerate(failures) if not outcomes[k].duplicate]
    opened = cases.open_cases([_failed_payment(failures[k]) for k in todo], actor=actor)
    for k, result in zip(todo, opened, strict=True):
        outcomes[k] = FailureOutcome(result.case, result.created, result.attempt, result.error)
        if result.error is None and not result.created and result.attempt is not None:
            retries.after_decline(result.case, result.attempt, at=failures[k].at)
    return outcomes


def _failed_payment(failure: Failure) -> cases.FailedPayment:
    record = None
    if failure.idempotency_key:
        method = failure.payment_method
        attempt = PaymentAttempt(
            payment_method=method, source=PaymentAttempt.Source.EXTERNAL, outcome=PaymentAttempt.Outcome.FAILED,
            gateway=failure.gateway, gateway_reference=failure.reference, idempotency_key=failure.idempotency_key,
            decline_code=failure.decline_code, network_code=failure.network_code[:8],
            advice_code=failure.advice_code[:8], message=failure.message[:255], completed_at=failure.at,
        )
        record = {"payment_method": method, "source": attempt.source, "outcome": attempt.outcome,
                  "gateway": attempt.gateway, "gateway_reference": attempt.gateway_reference,
                  "idempotency_key": attempt.idempotency_key, "decline_code": attempt.decline_code,
                  "network_code": attempt.network_code, "advice_code": attempt.advice_code,
                  "message": attempt.message, "completed_at": attempt.completed_at,
                  "decline_class": classify_attempt(attempt, at=failure.at) if failure.decline_code else ""}
    return cases.FailedPayment(failure.invoice_id, failed_at=failure.at, decline_code=failure.decline_code,
                                 record_attempt=record)


def payment_received(invoice: Invoice, amount: Decimal | None = None, *, idempotency_key: str,
                     paid_total: Decimal | None = None, up_to_balance: bool = False, reference: str = "",
                     actor=None, at: datetime | None = None) -> receipts.Receipt:
    """Money the billing system or a gateway received for the invoice (not one of our own charges)."""
    return receipts.receive_payment(invoice, amount, idempotency_key=idempotency_key, paid_total=paid_total,
                                    up_to_balance=up_to_balance, source=PaymentAttempt.Source.EXTERNAL,
                                    reference=reference, actor=actor, at=at)


def refunded(invoice: Invoice, amount: Decimal) -> Invoice:
    """Money given back: the invoice's paid amount goes down (and a paid invoice may be open again)."""
    return apply_refund(invoice.pk, amount)


def method_added(customer: Customer, *, gateway: str, token: str, details: dict, actor: str | None = None,
                 source: str = PaymentAttempt.Source.PORTAL, event_id: int | None = None) -> customers.SavedMethod:
    """A new (or refreshed) payment method of the customer: saved as the default, then every open
    invoice is retried with it once, after the commit."""
    saved = customers.save_method(customer, gateway=gateway, token=token,
                                  **{name: details.get(name) for name in customers.DETAIL_FIELDS})
    retry_after_commit(saved.method, actor=actor, source=source, event_id=event_id)
    return saved


def method_changed(method: PaymentMethod, details: dict, *, actor: str | None = None,
                   source: str = PaymentAttempt.Source.PORTAL, event_id: int | None = None) -> bool:
    """The gateway reports new details of a saved card (a new expiry, a reissued card). If they
    changed, or the card was blocked after a decline, the open invoices are retried with it once,
    after the commit. Returns whether a retry was queued."""
    if customers.update_details(method, **{name: details.get(name) for name in customers.DETAIL_FIELDS}) \
            or method.charge_blocked_at:
        retry_after_commit(method, actor=actor, source=source, event_id=event_id)
        return True
    return False


def customer_updated(customer: Customer, *, email: str = "", name: str = "", default_method: PaymentMethod | None,
                     actor: str | None = None, source: str = PaymentAttempt.Source.PORTAL,
                     event_id: int | None = None) -> list[str]:
    """The customer's email, name or default method changed at the source; returns what changed. A
    method that becomes the default is retried on the open invoices once, after the commit."""
    changes = customers.update_contact(customer, email=email, name=name)
    if default_method is not None and customers.make_default(default_method):
        retry_after_commit(default_method, actor=actor, source=source, event_id=event_id)
        changes.append("default payment method")
    return changes


def retry_after_commit(method: PaymentMethod, *, actor: str | None = None, source: str = PaymentAttempt.Source.PORTAL,
                       event_id: int | None = None) -> None:
    """The card-update retry (dunning.tasks.retry_after_method_update), in a worker once this
    transaction commits: gateway calls never run inside it. With ``event_id`` its outcome is noted on
    that inbound event (integrations.tasks.retry_after_method_update)."""
    transaction.on_commit(lambda: async_task("integrations.tasks.retry_after_method_update", method.pk,
                                             actor, source, event_id))
