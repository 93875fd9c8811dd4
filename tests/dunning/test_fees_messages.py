"""Fees appear in reminders and for the portal; what is owed stays consistent with the invoice."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core import mail

from billing import fees as billing_fees
from billing.models import Invoice, InvoiceFee
from dunning import engine, fees
from dunning.cases import open_case
from dunning.models import DunningCase
from dunning.payments import record_payment
from notifications import services as outbox
from notifications.models import MessageTemplate
from tests.factories import CustomerFactory, FeePolicyFactory, InvoiceFactory
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


def test_reminders_list_the_fees_and_the_total_now_due(defaults, clock):
    FeePolicyFactory(campaign=defaults, fixed_fees={"USD": "15.00"})
    customer = CustomerFactory(email="late@example.com")
    first = InvoiceFactory(customer=customer, amount_due=Decimal("100.00"))
    second = InvoiceFactory(customer=customer, amount_due=Decimal("50.00"))
    for invoice in (first, second):
        open_case(invoice)
    engine.run_due_steps()  # day 0: first notice, before any fee
    outbox.send_queued()
    clock.move_to(T0 + datetime.timedelta(days=5))
    fees.apply_fees()
    engine.run_due_steps()  # day 5: the reminder
    outbox.send_queued()
    notice, reminder = [m.body for m in mail.outbox]
    assert "Late payment charges" not in notice
    assert "Late payment charges: $30.00" in reminder
    assert f"- Late fee ({first.number}): $15.00" in reminder
    assert f"- Late fee ({second.number}): $15.00" in reminder
    assert "Total now due: $180.00" in reminder


def test_portal_helpers_and_payment_of_principal_then_fees(defaults, clock):
    FeePolicyFactory(campaign=defaults, fixed_fees={"USD": "15.00"})
    invoice = InvoiceFactory(amount_due=Decimal("100.00"))
    case, _ = open_case(invoice)
    clock.move_to(T0 + datetime.timedelta(days=2))
    fees.apply_fees()
    assert [f.amount for f in billing_fees.open_fees(invoice)] == [Decimal("15.00")]
    assert billing_fees.amount_owed(invoice) == Decimal("115.00")
    # The whole amount owed: the invoice is paid, the fee too, nothing is credited.
    record_payment(invoice, Decimal("115.00"))
    invoice.refresh_from_db()
    case.refresh_from_db()
    assert invoice.amount_paid == invoice.amount_due == Decimal("100.00")
    assert invoice.status == Invoice.Status.PAID and case.status == DunningCase.Status.RECOVERED
    assert InvoiceFee.objects.get().status == InvoiceFee.Status.PAID
    assert billing_fees.open_fees(invoice) == [] and billing_fees.amount_owed(invoice) == 0
    assert not invoice.customer.credits.exists()


def test_the_new_merge_variables_pass_the_template_check(db):
    template = MessageTemplate(code="fees", channel="email", locale="en", subject="{{ invoice_count }}",
                               body_text="{{ contact_name }} {% for f in fees %}{{ f.label }} {{ f.amount }}"
                                         "{% endfor %} {{ fees_total }} {{ total_owed }}")
    template.full_clean()
