"""Campaign assignment rules, exclusions and pins."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dunning.cases import FailedPayment, open_case, open_cases
from dunning.errors import DunningExcluded
from dunning.models import Campaign, CampaignPin, DunningCase
from tests.factories import (
    CampaignFactory,
    CampaignStepFactory,
    CustomerFactory,
    InvoiceFactory,
    PaymentMethodFactory,
)

pytestmark = pytest.mark.django_db


def selected(invoice) -> Campaign:
    """The campaign open_cases would give the invoice."""
    return Campaign.objects.targeting([invoice]).select(invoice)


def campaign(name, priority, **rules):
    c = CampaignFactory(name=name, priority=priority, **rules)
    CampaignStepFactory(campaign=c, position=1)
    return c


@pytest.fixture
def fallback():
    return campaign("Fallback", 1000)


def test_country_rule(fallback):
    eu = campaign("EU", 10, countries="it, DE")
    assert selected(InvoiceFactory(customer=CustomerFactory(country="IT"))) == eu
    assert selected(InvoiceFactory(customer=CustomerFactory(country="US"))) == fallback


def test_tenure_rule(fallback, clock):
    newcomers = campaign("Newcomers", 10, max_tenure_days=30)
    loyal = campaign("Loyal", 20, min_tenure_days=365)
    new = CustomerFactory(created_at=clock.now - datetime.timedelta(days=3))
    old = CustomerFactory(created_at=clock.now - datetime.timedelta(days=400))
    middle = CustomerFactory(created_at=clock.now - datetime.timedelta(days=100))
    assert selected(InvoiceFactory(customer=new)) == newcomers
    assert selected(InvoiceFactory(customer=old)) == loyal
    assert selected(InvoiceFactory(customer=middle)) == fallback


def test_payment_method_type_rule_looks_the_method_up_once(fallback):
    sepa = campaign("SEPA", 10, payment_method_kinds="sepa_debit")
    nothing = campaign("No method", 20, payment_method_kinds="none")
    campaign("Cards too", 30, payment_method_kinds="card, ach_debit")
    with_sepa = CustomerFactory()
    PaymentMethodFactory(customer=with_sepa, kind="sepa_debit")
    invoice = InvoiceFactory(customer=with_sepa)
    invoice = type(invoice).objects.select_related("customer").get(pk=invoice.pk)
    with CaptureQueriesContext(connection) as queries:
        assert selected(invoice) == sepa
    # pins (1), campaigns (1), the payment method (1): never one query per campaign.
    assert len(queries) == 3
    assert selected(InvoiceFactory(customer=CustomerFactory())) == nothing


def test_segment_currency_and_amount_still_apply(fallback):
    big_pro = campaign("Big pro EUR", 10, segment="pro", currency="EUR", min_amount=500)
    pro = CustomerFactory(segment="pro", currency="EUR")
    assert selected(InvoiceFactory(customer=pro, amount_due=Decimal("600"))) == big_pro
    assert selected(InvoiceFactory(customer=pro, amount_due=Decimal("100"))) == fallback


def test_excluded_customer_or_invoice_gets_no_case(fallback):
    customer = CustomerFactory(exclude_from_dunning=True)
    with pytest.raises(DunningExcluded):
        open_case(InvoiceFactory(customer=customer))
    invoice = InvoiceFactory(exclude_from_dunning=True)
    with pytest.raises(DunningExcluded):
        open_case(invoice)
    assert not invoice.dunning_cases.exists()


def test_pins_win_over_rules_invoice_first(fallback):
    special = campaign("Special", 500, active=False)
    vip = campaign("VIP", 600)
    customer = CustomerFactory()
    CampaignPin.objects.create(customer=customer, campaign=vip)
    pinned_invoice = InvoiceFactory(customer=customer)
    CampaignPin.objects.create(invoice=pinned_invoice, campaign=special)
    assert selected(InvoiceFactory(customer=customer)) == vip
    case, _ = open_case(pinned_invoice)
    assert case.campaign == special


def test_rules_are_validated():
    with pytest.raises(ValidationError):
        CampaignFactory.build(payment_method_kinds="card, cheque").full_clean()
    with pytest.raises(ValidationError):
        CampaignFactory.build(min_tenure_days=10, max_tenure_days=5).full_clean()


def _opened_batch(n_plain: int, tag: str = ""):
    """A batch with every kind of failure open_cases must tell apart, plus n_plain ordinary ones."""
    from dunning.models import CampaignVariant

    eu = campaign("EU" + tag, 10, countries="IT, DE")
    gentle = campaign("Gentle" + tag, 900, active=False)
    experiment = campaign("Experiment" + tag, 20, segment="ab")
    CampaignVariant.objects.create(experiment=experiment, name="control", weight=1, steps_from=experiment,
                                   is_control=True)
    CampaignVariant.objects.create(experiment=experiment, name="gentle", weight=1, steps_from=gentle)
    vip = campaign("VIP" + tag, 600)
    pinned = CustomerFactory()
    CampaignPin.objects.create(customer=pinned, campaign=vip)
    already = InvoiceFactory()
    open_before, _ = open_case(already)
    twice = InvoiceFactory(customer=CustomerFactory(country="DE"))
    paid = InvoiceFactory(status="paid", amount_paid=Decimal("10.00"), amount_due=Decimal("10.00"))
    failures = [
        FailedPayment(InvoiceFactory(customer=CustomerFactory(country="IT")).pk, decline_code="do_not_honor"),
        FailedPayment(InvoiceFactory(customer=pinned).pk),
        FailedPayment(InvoiceFactory(customer=CustomerFactory(exclude_from_dunning=True)).pk),
        FailedPayment(paid.pk),
        FailedPayment(already.pk, decline_code="insufficient_funds"),
        FailedPayment(twice.pk),
        FailedPayment(twice.pk, decline_code="insufficient_funds"),
        *[FailedPayment(InvoiceFactory(customer=CustomerFactory(segment="ab")).pk) for _ in range(n_plain)],
    ]
    return failures, {"eu": eu, "vip": vip, "open_before": open_before, "experiment": experiment,
                      "gentle": gentle}


def test_open_cases_in_bulk_follows_the_same_rules_as_one_at_a_time(fallback):
    failures, c = _opened_batch(6)
    results = open_cases(failures, actor="api:test")
    italy, pinned, excluded, paid, again, first, second, *plain = results
    assert italy.created and italy.case.campaign == c["eu"] and italy.case.decline_code == "do_not_honor"
    assert pinned.created and pinned.case.campaign == c["vip"]
    assert isinstance(excluded.error, DunningExcluded) and excluded.case is None
    assert "paid, not open" in str(paid.error)
    assert not again.created and again.case == c["open_before"]
    assert again.case.events.filter(kind="payment.failed").count() == 1
    # Two failures of one invoice in the same batch: one case, the second noted on its timeline.
    assert first.created and not second.created and first.case == second.case
    assert [e.kind for e in first.case.events.order_by("id")] == ["case.opened", "payment.failed"]
    # The A/B test assigns variants exactly as a single open_case would (stable per invoice).
    for result in plain:
        expected_campaign, expected_variant = c["experiment"].assign_variant(result.case.invoice)
        assert result.case.variant == expected_variant and result.case.campaign == expected_campaign
        assert result.case.next_step == expected_campaign.steps.order_by("position").first()
    assert {r.case.campaign for r in plain} == {c["experiment"], c["gentle"]}
    opened = [r for r in results if r.created]
    assert all(r.case.events.get(kind="case.opened").actor_label == "api:test" for r in opened)
    # Nothing was written for the refused ones.
    for result, failure in zip(results, failures, strict=True):
        if result.error is not None:
            assert not DunningCase.objects.filter(invoice_id=failure.invoice_id, status="active").exists()


def test_open_cases_costs_the_same_queries_for_five_or_forty(fallback):
    counts = []
    # The first round also fills per-process caches (the decline table); 40 keeps every bulk insert
    # within SQLite's 999 parameters (PostgreSQL has no such split).
    for n in (1, 5, 40):
        failures, _c = _opened_batch(n, tag=str(n))
        with CaptureQueriesContext(connection) as queries:
            results = open_cases(failures)
        assert sum(r.created for r in results) == n + 3
        counts.append(len(queries))
        DunningCase.objects.update(status="cancelled")
        CampaignPin.objects.all().delete()
        type(_c["eu"]).objects.exclude(name="Fallback").update(active=False)
    assert counts[1] == counts[2]
