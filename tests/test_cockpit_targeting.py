"""Campaign assignment rules, exclusions and pins."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dunning import services
from dunning.models import CampaignPin
from tests.factories import (
    CampaignFactory,
    CampaignStepFactory,
    CustomerFactory,
    InvoiceFactory,
    PaymentMethodFactory,
)

pytestmark = pytest.mark.django_db


def campaign(name, priority, **rules):
    c = CampaignFactory(name=name, priority=priority, **rules)
    CampaignStepFactory(campaign=c, position=1)
    return c


@pytest.fixture
def fallback():
    return campaign("Fallback", 1000)


def test_country_rule(fallback):
    eu = campaign("EU", 10, countries="it, DE")
    assert services.select_campaign(InvoiceFactory(customer=CustomerFactory(country="IT"))) == eu
    assert services.select_campaign(InvoiceFactory(customer=CustomerFactory(country="US"))) == fallback


def test_tenure_rule(fallback, clock):
    newcomers = campaign("Newcomers", 10, max_tenure_days=30)
    loyal = campaign("Loyal", 20, min_tenure_days=365)
    new = CustomerFactory(created_at=clock.now - datetime.timedelta(days=3))
    old = CustomerFactory(created_at=clock.now - datetime.timedelta(days=400))
    middle = CustomerFactory(created_at=clock.now - datetime.timedelta(days=100))
    assert services.select_campaign(InvoiceFactory(customer=new)) == newcomers
    assert services.select_campaign(InvoiceFactory(customer=old)) == loyal
    assert services.select_campaign(InvoiceFactory(customer=middle)) == fallback


def test_payment_method_type_rule_looks_the_method_up_once(fallback):
    sepa = campaign("SEPA", 10, payment_method_kinds="sepa_debit")
    nothing = campaign("No method", 20, payment_method_kinds="none")
    campaign("Cards too", 30, payment_method_kinds="card, ach_debit")
    with_sepa = CustomerFactory()
    PaymentMethodFactory(customer=with_sepa, kind="sepa_debit")
    invoice = InvoiceFactory(customer=with_sepa)
    invoice = type(invoice).objects.select_related("customer").get(pk=invoice.pk)
    with CaptureQueriesContext(connection) as queries:
        assert services.select_campaign(invoice) == sepa
    # pins (2), campaigns (1), the payment method (1): never one query per campaign.
    assert len(queries) == 4
    assert services.select_campaign(InvoiceFactory(customer=CustomerFactory())) == nothing


def test_segment_currency_and_amount_still_apply(fallback):
    big_pro = campaign("Big pro EUR", 10, segment="pro", currency="EUR", min_amount=500)
    pro = CustomerFactory(segment="pro", currency="EUR")
    assert services.select_campaign(InvoiceFactory(customer=pro, amount_due=Decimal("600"))) == big_pro
    assert services.select_campaign(InvoiceFactory(customer=pro, amount_due=Decimal("100"))) == fallback


def test_excluded_customer_or_invoice_gets_no_case(fallback):
    customer = CustomerFactory(exclude_from_dunning=True)
    with pytest.raises(services.DunningExcluded):
        services.open_case(InvoiceFactory(customer=customer))
    invoice = InvoiceFactory(exclude_from_dunning=True)
    with pytest.raises(services.DunningExcluded):
        services.open_case(invoice)
    assert not invoice.dunning_cases.exists()


def test_pins_win_over_rules_invoice_first(fallback):
    special = campaign("Special", 500, active=False)
    vip = campaign("VIP", 600)
    customer = CustomerFactory()
    CampaignPin.objects.create(customer=customer, campaign=vip)
    pinned_invoice = InvoiceFactory(customer=customer)
    CampaignPin.objects.create(invoice=pinned_invoice, campaign=special)
    assert services.select_campaign(InvoiceFactory(customer=customer)) == vip
    case, _ = services.open_case(pinned_invoice)
    assert case.campaign == special


def test_rules_are_validated():
    with pytest.raises(ValidationError):
        CampaignFactory.build(payment_method_kinds="card, cheque").full_clean()
    with pytest.raises(ValidationError):
        CampaignFactory.build(min_tenure_days=10, max_tenure_days=5).full_clean()
