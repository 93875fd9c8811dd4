"""Partial payments from every source keep the case open for the rest; overpayments become credit."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core import mail

from billing import services as billing
from billing.attempts import process_pending
from billing.models import CustomerCredit, Invoice, PaymentAllocation, PaymentAttempt
from dunning import engine
from dunning.cases import open_case
from dunning.models import DunningCase
from dunning.payments import SETTLEMENT, record_payment
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


def pending_attempt(invoice, method, source, amount) -> PaymentAttempt:
    attempt = billing.new_attempt(invoice, payment_method=method, source=source, amount=Decimal(amount))
    attempt.save()
    return attempt


def assert_partial(case: DunningCase, invoice: Invoice, remaining: str) -> None:
    case.refresh_from_db()
    invoice.refresh_from_db()
    assert case.status == DunningCase.Status.ACTIVE
    assert invoice.status == Invoice.Status.OPEN
    assert invoice.amount_remaining == Decimal(remaining)
    event = case.events.filter(kind="payment.partial").latest("id")
    assert Decimal(event.payload["remaining"]) == Decimal(remaining)


@pytest.mark.parametrize("source", [PaymentAttempt.Source.RETRY, PaymentAttempt.Source.PORTAL])
def test_a_partial_charge_through_the_gateway_keeps_the_case_open(defaults, clock, source):
    customer = CustomerFactory()
    method = PaymentMethodFactory(customer=customer)
    invoice = InvoiceFactory(customer=customer, amount_due=Decimal("120.00"))
    case, _ = open_case(invoice)
    attempt = pending_attempt(invoice, method, source, "50.00")
    assert process_pending(SETTLEMENT) == 1
    attempt.refresh_from_db()
    assert attempt.outcome == PaymentAttempt.Outcome.SUCCEEDED
    assert_partial(case, invoice, "70.00")


@pytest.mark.parametrize("source", [PaymentAttempt.Source.EXTERNAL, PaymentAttempt.Source.MANUAL])
def test_a_partial_payment_reported_by_import_or_api_keeps_the_case_open(defaults, clock, source):
    invoice = InvoiceFactory(amount_due=Decimal("120.00"))
    case, _ = open_case(invoice)
    attempt, created = billing.record_external_payment(invoice, Decimal("20.00"), source=source,
                                                       idempotency_key="import-row-7")
    assert created
    record_payment(invoice, attempt.amount, attempt=attempt)
    # The same row imported again is the same payment: nothing changes.
    _again, created_again = billing.record_external_payment(invoice, Decimal("20.00"), source=source,
                                                            idempotency_key="import-row-7")
    assert not created_again
    assert_partial(case, invoice, "100.00")
    assert PaymentAllocation.objects.filter(invoice=invoice).count() == 1


def test_reminders_after_a_partial_payment_show_what_remains(defaults, clock):
    customer = CustomerFactory(email="ana@example.com")
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:ana")
    invoice = InvoiceFactory(customer=customer, amount_due=Decimal("120.00"))
    case, _ = open_case(invoice)
    engine.run_due_steps()  # the first notice at day 0
    from notifications import services as outbox

    outbox.send_queued()
    record_payment(invoice, Decimal("45.50"))
    clock.move_to(T0 + datetime.timedelta(days=5))
    engine.run_due_steps()
    process_pending(SETTLEMENT)
    outbox.send_queued()
    bodies = [m.body for m in mail.outbox if m.to == ["ana@example.com"]]
    assert "$120.00" in bodies[0]
    assert "$74.50" in bodies[-1] and "$120.00" not in bodies[-1]
    # The retry at day 3 charged the remaining balance, not the invoice total.
    assert PaymentAttempt.objects.get(source="retry").amount == Decimal("74.50")
    case.refresh_from_db()
    assert case.status == DunningCase.Status.ACTIVE


def test_an_overpayment_becomes_customer_credit(defaults, clock):
    invoice = InvoiceFactory(amount_due=Decimal("80.00"))
    case, _ = open_case(invoice)
    record_payment(invoice, Decimal("30.00"))
    record_payment(invoice, Decimal("75.00"))
    invoice.refresh_from_db()
    case.refresh_from_db()
    assert invoice.amount_paid == Decimal("80.00") and invoice.status == Invoice.Status.PAID
    assert case.status == DunningCase.Status.RECOVERED
    credit = CustomerCredit.objects.get()
    assert (credit.customer, credit.amount, credit.currency, credit.invoice) == (
        invoice.customer, Decimal("25.00"), "USD", invoice)
    assert case.events.filter(kind="payment.credit").count() == 1
    # A payment for an invoice that is already paid is kept whole as credit, not lost.
    record_payment(invoice, Decimal("10.00"))
    from billing.fees import credit_balance

    assert credit_balance(invoice.customer, "USD") == Decimal("35.00")


def test_receive_payment_applies_a_repeated_import_row_or_api_call_once(defaults, clock):
    from dunning.receipts import receive_payment

    invoice = InvoiceFactory(amount_due=Decimal("90.00"))
    case, _ = open_case(invoice)
    for _ in range(3):
        receive_payment(invoice, Decimal("40.00"), idempotency_key="api:pay-1", actor="api:key-a")
    assert_partial(case, invoice, "50.00")
    assert case.events.filter(kind="payment.partial").count() == 1
    applied = receive_payment(invoice, Decimal("60.00"), idempotency_key="import:row-2")
    assert applied.created and applied.attempt.amount == Decimal("60.00")
    case.refresh_from_db()
    assert case.status == DunningCase.Status.RECOVERED
    assert CustomerCredit.objects.get().amount == Decimal("10.00")
