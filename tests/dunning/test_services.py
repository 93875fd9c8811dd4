"""Bad input gets a clear error and writes nothing."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from billing import services as billing
from billing.models import Invoice
from billing.money import format_money, to_amount, to_minor_units
from dunning.cases import open_case
from dunning.errors import DunningError, NoMatchingCampaign
from dunning.models import CaseEvent, DunningCase
from tests.factories import CampaignFactory, CustomerFactory, InvoiceFactory

pytestmark = pytest.mark.django_db

TODAY = datetime.date(2026, 3, 1)


def invoice_kwargs(**overrides):
    return {"external_id": "in_1", "number": "INV-1", "currency": "USD", "amount_due": "10.00",
            "issued_at": TODAY, "due_date": TODAY, **overrides}


def test_invalid_currency_is_refused_with_a_clear_error():
    customer = CustomerFactory()
    with pytest.raises(ValidationError) as exc:
        billing.create_invoice(customer=customer, **invoice_kwargs(currency="XYZ"))
    assert "XYZ is not an ISO 4217 currency code" in str(exc.value)
    assert Invoice.objects.count() == 0


def test_negative_amount_is_refused_with_a_clear_error():
    customer = CustomerFactory()
    with pytest.raises(ValidationError) as exc:
        billing.create_invoice(customer=customer, **invoice_kwargs(amount_due="-5"))
    assert "cannot be negative" in str(exc.value)
    assert Invoice.objects.count() == 0


def test_unknown_customer_is_refused_with_a_clear_error():
    with pytest.raises(ValidationError) as exc:
        billing.create_invoice(customer="cus_missing", **invoice_kwargs())
    assert "Unknown customer 'cus_missing'" in str(exc.value)
    assert Invoice.objects.count() == 0


def test_due_date_before_issue_date_is_refused():
    with pytest.raises(ValidationError) as exc:
        billing.create_invoice(customer=CustomerFactory(), **invoice_kwargs(due_date=TODAY - datetime.timedelta(1)))
    assert "due date cannot be before" in str(exc.value)


def test_campaign_with_no_steps_is_a_clear_error_and_writes_nothing():
    CampaignFactory(name="Empty", active=True)
    invoice = InvoiceFactory()
    with pytest.raises(DunningError, match="Campaign 'Empty' has no steps"):
        open_case(invoice)
    assert DunningCase.objects.count() == 0
    assert CaseEvent.objects.count() == 0


def test_no_matching_campaign_is_a_clear_error():
    CampaignFactory(currency="EUR")
    with pytest.raises(NoMatchingCampaign, match="No active campaign matches invoice"):
        open_case(InvoiceFactory())
    assert DunningCase.objects.count() == 0


def test_a_paid_invoice_does_not_open_a_case(defaults):
    invoice = InvoiceFactory(status=Invoice.Status.PAID, amount_paid="49.00")
    with pytest.raises(DunningError, match="is paid, not open"):
        open_case(invoice)


def test_admin_refuses_to_activate_a_campaign_without_steps(client):
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    response = client.post("/admin/dunning/campaign/add/", {
        "name": "No steps", "active": "on", "priority": "5", "currency": "", "segment": "",
        "steps-TOTAL_FORMS": "0", "steps-INITIAL_FORMS": "0", "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    })
    assert response.status_code == 200
    assert "An active campaign needs at least one step." in response.content.decode()


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [("12.345", "USD", "12.35"), ("12000.4", "JPY", "12000"), ("1.2345", "BHD", "1.235"), ("0.005", "EUR", "0.01")],
)
def test_amounts_round_to_the_currency_minor_unit(value, currency, expected):
    assert str(to_amount(value, currency)) == expected


def test_minor_units_and_locale_formatting():
    assert to_minor_units(to_amount("1234.56", "USD"), "USD") == 123456
    assert to_minor_units(to_amount("12000", "JPY"), "JPY") == 12000
    assert format_money(to_amount("1234.56", "EUR"), "EUR", "it") == "1.234,56\xa0€"
    assert format_money(to_amount("12000", "JPY"), "JPY", "en") == "¥12,000"


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", "", "1e"])
def test_garbage_amounts_are_refused(bad):
    with pytest.raises(ValidationError):
        to_amount(bad, "USD")
