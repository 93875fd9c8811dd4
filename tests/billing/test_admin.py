"""Money in the admin is shown by billing.money.format_money: the currency's minor unit, never the stored 15.0000."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from dunning.cases import open_case
from tests.factories import (
    CampaignFactory,
    CampaignStepFactory,
    CustomerFactory,
    InvoiceFactory,
    InvoiceFeeFactory,
    PaymentAttemptFactory,
    PaymentPlanFactory,
)
from tests.support.cases import staff_user

pytestmark = pytest.mark.django_db

SHOWN = {"USD": "$15.00", "JPY": "¥12,000"}


@pytest.fixture
def cases():
    CampaignStepFactory(campaign=CampaignFactory(name="Standard"), position=1, offset_days=1)
    found = {}
    for currency, amount in (("USD", "15"), ("JPY", "12000")):
        customer = CustomerFactory(currency=currency)
        invoice = InvoiceFactory(customer=customer, amount_due=Decimal(amount).quantize(Decimal("0.0001")))
        case, _ = open_case(invoice)
        attempt = PaymentAttemptFactory(invoice=invoice)
        found[currency] = {"invoice": invoice, "case": case, "attempt": attempt}
    return found


def page(client, name: str, *args) -> str:
    response = client.get(reverse(f"admin:{name}", args=args))
    assert response.status_code == 200, name
    return response.content.decode()


def assert_money(html: str, currency: str) -> None:
    assert SHOWN[currency] in html, currency
    assert "15.0000" not in html and "12000.0000" not in html and "12000.00" not in html


@pytest.mark.parametrize("role", ["superuser", "Auditor"])
def test_invoices_cases_and_attempts_show_money_by_the_currency_s_minor_unit(client, cases, role):
    user = staff_user("root", superuser=True) if role == "superuser" else staff_user("auditor", role)
    client.force_login(user)
    for changelist in ("billing_invoice_changelist", "dunning_dunningcase_changelist",
                       "billing_paymentattempt_changelist"):
        html = page(client, changelist)
        for currency in SHOWN:
            assert_money(html, currency)
    for currency, rows in cases.items():
        assert_money(page(client, "dunning_dunningcase_change", rows["case"].pk), currency)  # attempts table
        assert_money(page(client, "billing_paymentattempt_change", rows["attempt"].pk), currency)
        invoice_page = page(client, "billing_invoice_change", rows["invoice"].pk)  # the attempts inline
        assert_money(invoice_page, currency)
    assert_money(page(client, "index"), "USD")  # the dashboard's "at risk now"
    assert_money(page(client, "index"), "JPY")


def test_an_editable_invoice_amount_starts_at_the_currency_s_minor_unit(client, cases):
    client.force_login(staff_user("root", superuser=True))
    usd = page(client, "billing_invoice_change", cases["USD"]["invoice"].pk)
    jpy = page(client, "billing_invoice_change", cases["JPY"]["invoice"].pk)
    assert 'name="amount_due" value="15.00"' in usd
    assert 'name="amount_due" value="12000"' in jpy


def test_fees_and_plans_show_money_by_the_currency_s_minor_unit(client):
    client.force_login(staff_user("root", superuser=True))
    jpy = CustomerFactory(currency="JPY")
    fee = InvoiceFeeFactory(invoice=InvoiceFactory(customer=jpy, amount_due=Decimal("12000")),
                            amount=Decimal("1500.0000"))
    plan = PaymentPlanFactory(customer=jpy, total=Decimal("36000.0000"))
    for html in (page(client, "billing_invoicefee_changelist"), page(client, "billing_invoicefee_change", fee.pk)):
        assert "¥1,500" in html and "1500.0000" not in html
    for html in (page(client, "dunning_paymentplan_changelist"), page(client, "dunning_paymentplan_change", plan.pk)):
        assert "¥36,000" in html and "36000.0000" not in html
    assert "¥12,000" in page(client, "dunning_paymentplan_change", plan.pk)  # each instalment, in the inline
