"""Late fees and interest: added once however often the job runs, recomputed from payments."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from billing import fees as billing_fees
from billing.models import CustomerCredit, Invoice, InvoiceFee
from dunning import cases, fees
from dunning.errors import DunningError
from dunning.models import CaseEvent, DunningCase, FeePolicy
from dunning.payments import record_payment
from tests.factories import CampaignFactory, CampaignStepFactory, CustomerFactory, FeePolicyFactory, InvoiceFactory
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


def campaign_with_fees(**policy) -> FeePolicy:
    campaign = CampaignFactory()
    CampaignStepFactory(campaign=campaign, position=1, offset_days=90)  # keeps the case open
    return FeePolicyFactory(campaign=campaign, **policy)


def open_case(invoice, policy) -> DunningCase:
    case, _ = cases.open_case(invoice, campaign=policy.campaign)
    return case


def at_day(clock, day: int, hour: int = 1) -> None:
    clock.move_to(T0.replace(hour=hour) + datetime.timedelta(days=day))


def test_fees_are_added_once_on_repeated_runs_the_same_day_and_across_a_month(clock):
    policy = campaign_with_fees(fixed_fees={"USD": "15.00"}, annual_interest_rate=Decimal("10"))
    invoice = InvoiceFactory(amount_due=Decimal("1000.00"))  # due on T0's day, 2026-03-02
    case = open_case(invoice, policy)

    # Nothing on the due date itself.
    for _ in range(3):
        fees.apply_fees()
    assert InvoiceFee.objects.count() == 0

    # The day after: the fixed fee, once, whatever the number of runs; no completed overdue day yet.
    for hour in (0, 1, 13, 23):
        at_day(clock, 1, hour)
        fees.apply_fees()
        fees.apply_fees()
    assert list(InvoiceFee.objects.values_list("kind", "amount")) == [("fixed", Decimal("15.0000"))]

    # A month of hourly-ish runs (three a day).
    for day in range(2, 33):
        for hour in (0, 8, 16):
            at_day(clock, day, hour)
            fees.apply_fees()
    rows = list(InvoiceFee.objects.order_by("id"))
    assert [r.kind for r in rows] == ["fixed", "interest"]
    interest = rows[1]
    # Day 32 counts completed days 2026-03-03 .. 2026-04-02: 31 days of 1000.00 at 10% a year.
    expected = (Decimal("1000") * Decimal("0.10") * 31 / 365).quantize(Decimal("0.01"))
    assert expected == Decimal("8.49")
    assert interest.amount == expected
    assert interest.accrued_through == datetime.date(2026, 4, 2)
    assert case.events.filter(kind="fee.added").count() == 2
    invoice.refresh_from_db()
    assert billing_fees.amount_owed(invoice) == Decimal("1000.00") + Decimal("15.00") + expected
    assert invoice.amount_due == Decimal("1000.00")  # the invoice itself is unchanged


def test_interest_after_partial_payments_matches_a_hand_computation(clock):
    policy = campaign_with_fees(annual_interest_rate=Decimal("12"))
    invoice = InvoiceFactory(amount_due=Decimal("1200.00"), currency="EUR",
                             customer=CustomerFactory(currency="EUR"))
    case = open_case(invoice, policy)

    def run_through(last_day: int) -> None:
        for day in range(1, last_day + 1):
            at_day(clock, day, 1)
            fees.apply_fees()

    # 400 paid on 2026-03-13 (day 11) at 10:00, after that day's 01:00 run; 300 on 2026-03-23.
    run_through(11)
    at_day(clock, 11, 10)
    record_payment(invoice, Decimal("400.00"))
    fees.apply_fees()
    for day in range(12, 22):
        at_day(clock, day)
        fees.apply_fees()
    at_day(clock, 21, 15)
    record_payment(invoice, Decimal("300.00"))
    for day in range(22, 32):
        at_day(clock, day)
        fees.apply_fees()

    # Completed days up to 2026-04-01:
    #   03-03..03-12: 10 days x 1200 = 12000
    #   03-13..03-22: 10 days x  800 =  8000   (the partial lowers the balance from its own day)
    #   03-23..04-01: 10 days x  500 =  5000
    # 25000 x 12% / 365 = 8.2191... -> 8.22
    interest = InvoiceFee.objects.get(kind="interest")
    assert interest.accrued_through == datetime.date(2026, 4, 1)
    assert interest.amount == Decimal("8.22")
    case.refresh_from_db()
    assert case.status == DunningCase.Status.ACTIVE

    # 2026-04-02 10:00: 510.00 arrives: 500 principal, 8.22 interest, 1.78 kept as credit.
    at_day(clock, 31, 10)
    record_payment(invoice, Decimal("510.00"))
    invoice.refresh_from_db()
    interest.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID and invoice.amount_paid == Decimal("1200.00")
    assert interest.status == InvoiceFee.Status.PAID and interest.amount_paid == Decimal("8.22")
    credit = CustomerCredit.objects.get()
    assert credit.amount == Decimal("1.78") and credit.currency == "EUR"
    # Later runs close the interest without adding anything: the balance was zero from 04-02.
    for day in (32, 33, 40):
        at_day(clock, day)
        fees.apply_fees()
    interest.refresh_from_db()
    assert interest.amount == Decimal("8.22") and interest.final
    assert InvoiceFee.objects.count() == 1
    assert case.events.filter(kind="fee.interest_final").count() == 1


@pytest.mark.parametrize("is_business", [True, False])
def test_eu_preset_charges_business_customers_only(clock, settings, is_business):
    settings.FEES_EU_REFERENCE_RATE = Decimal("2.15")
    policy = campaign_with_fees(preset=FeePolicy.Preset.EU_B2B)
    customer = CustomerFactory(currency="EUR", country="IT", is_business=is_business)
    invoice = InvoiceFactory(customer=customer, amount_due=Decimal("1000.00"))
    open_case(invoice, policy)
    for day in range(1, 11):
        at_day(clock, day)
        fees.apply_fees()
    found = {f.kind: f for f in InvoiceFee.objects.all()}
    if not is_business:
        assert found == {}
        return
    assert found["recovery"].amount == Decimal("40.00")
    # 2.15 + 8 = 10.15% a year; 9 completed days on 1000.00 = 2.5027... -> 2.50.
    assert found["interest"].rate == Decimal("10.15")
    assert found["interest"].amount == Decimal("2.50")


def test_eu_preset_uses_the_policy_reference_rate_when_set(clock):
    policy = campaign_with_fees(preset=FeePolicy.Preset.EU_B2B, reference_rate=Decimal("4"))
    customer = CustomerFactory(currency="EUR", is_business=True)
    open_case(InvoiceFactory(customer=customer, amount_due=Decimal("3650.00")), policy)
    at_day(clock, 11)
    fees.apply_fees()
    # 12% on 3650.00 is 1.20 a day; 10 completed days.
    assert InvoiceFee.objects.get(kind="interest").amount == Decimal("12.00")


def test_grace_period_and_cap(clock):
    policy = campaign_with_fees(fixed_fees={"USD": "15"}, percentage=Decimal("2"),
                                annual_interest_rate=Decimal("36.5"), grace_days=5, caps={"USD": "30"})
    open_case(InvoiceFactory(amount_due=Decimal("500.00")), policy)
    at_day(clock, 5)
    fees.apply_fees()
    assert InvoiceFee.objects.count() == 0  # still in the grace period
    at_day(clock, 6)
    fees.apply_fees()
    assert sorted(InvoiceFee.objects.values_list("kind", "amount")) == [
        ("fixed", Decimal("15.00")), ("percentage", Decimal("10.00"))]
    # 36.5% on 500 is 0.50 a day: capped at 30 - 25 = 5.00 after ten days.
    for day in range(7, 30):
        at_day(clock, day)
        fees.apply_fees()
    assert InvoiceFee.objects.get(kind="interest").amount == Decimal("5.00")


def test_consumer_fees_stay_off_until_enabled(clock):
    policy = campaign_with_fees(enabled=False, fixed_fees={"USD": "15"})
    open_case(InvoiceFactory(), policy)
    at_day(clock, 3)
    fees.apply_fees()
    assert InvoiceFee.objects.count() == 0


def test_staff_waive_a_fee_with_a_reason_and_it_is_not_charged_again(clock, admin_user):
    policy = campaign_with_fees(fixed_fees={"USD": "15"})
    invoice = InvoiceFactory(amount_due=Decimal("100.00"))
    case = open_case(invoice, policy)
    at_day(clock, 2)
    fees.apply_fees()
    fee = InvoiceFee.objects.get()
    with pytest.raises(DunningError):
        fees.waive_fee(fee, actor=admin_user, reason=" ")
    fees.waive_fee(fee, actor=admin_user, reason="Goodwill: first late payment")
    for day in range(3, 6):
        at_day(clock, day)
        fees.apply_fees()
    fee.refresh_from_db()
    assert fee.status == InvoiceFee.Status.WAIVED and InvoiceFee.objects.count() == 1
    assert billing_fees.open_fees(invoice) == []
    event = CaseEvent.objects.get(case=case, kind="fee.waived")
    assert "Goodwill" in event.message and event.actor == admin_user
    # A payment of the invoice does not pay a waived fee: the extra becomes credit.
    record_payment(invoice, Decimal("115.00"))
    assert CustomerCredit.objects.get().amount == Decimal("15.00")


def test_policy_refuses_bad_currency_maps():
    policy = FeePolicy(campaign=CampaignFactory(), fixed_fees={"EURO": "40"})
    with pytest.raises(ValidationError):
        policy.full_clean()


def test_a_back_dated_payment_lowers_interest_from_its_own_day_on_the_next_run(clock):
    policy = campaign_with_fees(annual_interest_rate=Decimal("36.5"))  # 0.1% a day
    invoice = InvoiceFactory(amount_due=Decimal("1000.00"))
    open_case(invoice, policy)
    at_day(clock, 11)
    fees.apply_fees()
    interest = InvoiceFee.objects.get(kind="interest")
    assert interest.amount == Decimal("10.00")  # 10 completed days x 1.00
    fees.apply_fees()  # up to date: nothing changes
    # A bank transfer of 500.00 reported today, received on day 6 (2026-03-08).
    record_payment(invoice, Decimal("500.00"), at=T0.replace(hour=9) + datetime.timedelta(days=6))
    fees.apply_fees()
    interest.refresh_from_db()
    # 03-03..03-07: 5 x 1.00; 03-08..03-12: 5 x 0.50.
    assert interest.amount == Decimal("7.50")
