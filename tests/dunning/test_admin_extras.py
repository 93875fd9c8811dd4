"""Admin: fee policy on the campaign, fee waiver with a reason, contacts and step audience."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from billing.models import InvoiceFee
from dunning import fees
from dunning.cases import open_case
from dunning.models import CaseEvent
from tests.factories import BillingContactFactory, CustomerFactory, FeePolicyFactory, InvoiceFactory
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


def test_campaign_page_has_the_fee_policy_and_step_audience(defaults, admin_client):
    page = admin_client.get(f"/admin/dunning/campaign/{defaults.pk}/change/").content.decode()
    assert "fee_policy-0-annual_interest_rate" in page and "fee_policy-0-preset" in page
    assert "steps-0-audience" in page and "steps-0-escalate_to" in page


def test_customer_page_has_billing_contacts(db, admin_client):
    contact = BillingContactFactory(email="ap@example.org")
    page = admin_client.get(f"/admin/customers/customer/{contact.customer_id}/change/").content.decode()
    assert "ap@example.org" in page and "billing_contacts-0-role" in page


def test_waiving_a_fee_asks_for_a_reason_and_notes_it_on_the_timeline(defaults, clock, admin_client, admin_user):
    FeePolicyFactory(campaign=defaults, fixed_fees={"USD": "15"})
    invoice = InvoiceFactory(customer=CustomerFactory(), amount_due=Decimal("100"))
    case, _ = open_case(invoice)
    clock.move_to(T0 + datetime.timedelta(days=2))
    fees.apply_fees()
    fee = InvoiceFee.objects.get()
    url = "/admin/billing/invoicefee/"
    ask = admin_client.post(url, {"action": "waive", "_selected_action": [fee.pk]})
    assert ask.status_code == 200 and b'name="reason"' in ask.content
    fee.refresh_from_db()
    assert fee.status == InvoiceFee.Status.OPEN
    admin_client.post(url, {"action": "waive", "_selected_action": [fee.pk], "confirm": "yes",
                            "reason": "Customer was in hospital"}, follow=True)
    fee.refresh_from_db()
    assert fee.status == InvoiceFee.Status.WAIVED and fee.waive_reason == "Customer was in hospital"
    event = CaseEvent.objects.get(case=case, kind="fee.waived")
    assert event.actor == admin_user and "hospital" in event.message
