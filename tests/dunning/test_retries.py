"""Smart retries over weeks of simulated time: network limits, local hour and paydays, hard declines,
advice-code waits, quick retries after processing errors, and the retry after a method update."""

from __future__ import annotations

import datetime
import zoneinfo
from collections import Counter

import pytest
from django.core import mail
from django.db.models import Min

from billing.models import PaymentAttempt, SandboxCharge
from customers.models import PaymentMethod
from dunning import engine
from dunning.cases import open_case
from dunning.errors import DunningError
from dunning.models import DunningCase, WorkItem
from dunning.payments import retry_after_method_update, retry_now
from notifications.models import Notification
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.campaigns import retry_campaign, rolling_max
from tests.support.clock import T0

pytestmark = pytest.mark.django_db
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


def run_hours(clock, start: datetime.datetime, hours: int) -> None:
    """What the every-minute workers do from `start` for `hours` hours, jumping between due moments."""
    end = start + hours * HOUR
    clock.move_to(start)
    while True:
        clock.tick()
        upcoming = [
            DunningCase.objects.filter(status="active", next_action_at__gt=clock.now)
            .aggregate(m=Min("next_action_at"))["m"],
            PaymentAttempt.objects.filter(outcome="pending", lease_until__gt=clock.now)
            .aggregate(m=Min("lease_until"))["m"],
            Notification.objects.filter(status="queued", send_after__gt=clock.now).aggregate(m=Min("send_after"))["m"],
        ]
        upcoming = [t for t in upcoming if t is not None and t <= end]
        if not upcoming:
            clock.move_to(end)
            clock.tick()
            return
        clock.move_to(min(upcoming))


def reasons(case, kind: str) -> set[str]:
    return {r for payload in case.events.filter(kind=kind).values_list("payload", flat=True)
            for r in payload.get("reasons", [])}


def attempt_times(invoice) -> list[datetime.datetime]:
    return list(PaymentAttempt.objects.filter(invoice=invoice).order_by("created_at")
                .values_list("created_at", flat=True))


def test_sixty_days_of_retries_never_break_a_network_limit(clock):
    """Four invoices on one Mastercard (Rome) retried every 8 hours: 12 charges a day would be asked
    for, the network allows 10 per 24 hours and 35 per 30 days. One Visa card (New York, across the US
    daylight-saving change on 8 March) allows 20 per 30 days."""
    campaign = retry_campaign("Every 8 hours", every_hours=8, days=60, local_hour=None, min_gap_hours=1)
    mc_customer = CustomerFactory(timezone="Europe/Rome")
    PaymentMethodFactory(customer=mc_customer, brand="mastercard", token="tok_insufficient_funds:mc")
    visa_customer = CustomerFactory(timezone="America/New_York")
    PaymentMethodFactory(customer=visa_customer, brand="visa", token="tok_insufficient_funds:visa")
    mc_invoices = InvoiceFactory.create_batch(4, customer=mc_customer)
    visa_invoice = InvoiceFactory(customer=visa_customer)
    for invoice in [*mc_invoices, visa_invoice]:
        open_case(invoice, campaign=campaign)

    run_hours(clock, T0, 60 * 24)

    mc = sorted(PaymentAttempt.objects.filter(invoice__in=mc_invoices).values_list("created_at", flat=True))
    assert rolling_max(mc, DAY) == 10          # Mastercard: at most 10 per card in 24 hours...
    assert rolling_max(mc, 30 * DAY) == 35     # ...and 35 in 30 days, reached but never exceeded
    assert len(mc) > 35                        # the 30-day window rolls: retries resume later
    visa = attempt_times(visa_invoice)
    assert rolling_max(visa, 30 * DAY) == 20   # Visa: 20 per rolling 30 days (since May 2025)
    assert len(visa) > 20
    for invoice in [*mc_invoices, visa_invoice]:
        times = attempt_times(invoice)
        assert all(b - a >= HOUR for a, b in zip(times, times[1:], strict=False))  # the minimum gap
    # Staff see why retries were not made.
    case = DunningCase.objects.get(invoice=mc_invoices[0])
    assert "network limit" in reasons(case, "step.retry_skipped")


def test_visa_limit_before_may_2025_is_fifteen(clock):
    clock.move_to(datetime.datetime(2025, 1, 6, 10, tzinfo=datetime.UTC))
    campaign = retry_campaign("Every 8 hours", every_hours=8, days=30, local_hour=None, min_gap_hours=1)
    customer = CustomerFactory()
    PaymentMethodFactory(customer=customer, brand="visa", token="tok_insufficient_funds:v")
    invoice = InvoiceFactory(customer=customer)
    open_case(invoice, campaign=campaign)
    run_hours(clock, clock.now, 20 * 24)
    assert rolling_max(attempt_times(invoice), 30 * DAY) == 15


def test_retries_happen_at_the_local_hour_on_paydays_in_two_time_zones_across_dst(clock):
    """09:00 local on the 1st or 15th. Rome changes to summer time on 29 March, New York on 8 March."""
    campaign = retry_campaign("Payday", every_hours=48, days=60, local_hour=9, use_paydays=True,
                              paydays=[1, 15], min_gap_hours=20)
    invoices = {}
    for tz in ("Europe/Rome", "America/New_York"):
        customer = CustomerFactory(timezone=tz)
        PaymentMethodFactory(customer=customer, brand="visa", token=f"tok_insufficient_funds:{tz}")
        invoices[tz] = InvoiceFactory(customer=customer)
        open_case(invoices[tz], decline_code="insufficient_funds", campaign=campaign)

    run_hours(clock, T0, 60 * 24)

    expected = {
        # The 60 days end on 1 May at 10:00 UTC: noon in Rome, 06:00 in New York (before its 09:00).
        "Europe/Rome": [(3, 15), (4, 1), (4, 15), (5, 1)],
        "America/New_York": [(3, 15), (4, 1), (4, 15)],
    }
    for tz, invoice in invoices.items():
        zone = zoneinfo.ZoneInfo(tz)
        local = [t.astimezone(zone) for t in attempt_times(invoice)]
        assert [(t.month, t.day) for t in local] == expected[tz], tz
        assert {(t.hour, t.minute) for t in local} == {(9, 0)}, tz
    rome_utc_hours = [t.hour for t in attempt_times(invoices["Europe/Rome"])]
    assert rome_utc_hours == [8, 7, 7, 7]  # 09:00 CET, then 09:00 CEST
    ny_utc_hours = [t.hour for t in attempt_times(invoices["America/New_York"])]
    assert ny_utc_hours == [13, 13, 13]  # 09:00 EDT (EST would have been 14:00)
    case = DunningCase.objects.get(invoice=invoices["Europe/Rome"])
    assert "payday" in reasons(case, "step.retry_deferred")


def test_local_hour_in_the_customers_time_zone_defers_the_retry(defaults, clock):
    """The Standard campaign's day-3 retry for a Tokyo customer waits for 10:00 in Tokyo."""
    customer = CustomerFactory(timezone="Asia/Tokyo")
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:t")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice)
    run_hours(clock, T0, 4 * 24)
    [moment] = attempt_times(invoice)
    assert moment.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo")).hour == 10
    assert moment == datetime.datetime(2026, 3, 6, 1, tzinfo=datetime.UTC)  # 10:00 JST on day 4
    assert case.events.filter(kind="step.retry_deferred").count() == 1


def test_no_retry_is_ever_made_after_a_hard_decline(defaults, clock):
    customer = CustomerFactory(email="stolen@example.com")
    card = PaymentMethodFactory(customer=customer, token="tok_stolen_card:s")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice, decline_code="insufficient_funds")

    run_hours(clock, T0, 28 * 24)

    assert SandboxCharge.objects.filter(token=card.token).count() == 1   # the day-3 retry, then never again
    attempts = list(PaymentAttempt.objects.filter(invoice=invoice))
    assert [(a.decline_code, a.decline_class) for a in attempts] == [("stolen_card", "hard")]
    card.refresh_from_db()
    case.refresh_from_db()
    assert card.charge_blocked_at is not None
    assert case.retry_state == DunningCase.RetryState.NEEDS_PAYMENT_METHOD
    assert case.events.filter(kind="step.retry_skipped").count() == 1     # the day-7 retry step
    assert WorkItem.objects.filter(case=case, kind=WorkItem.Kind.NEEDS_PAYMENT_METHOD).count() == 1
    subjects = [m.subject for m in mail.outbox if m.to == ["stolen@example.com"]]
    assert subjects.count("Please update your payment method for Acme Cloud") == 1

    # Staff pressing "retry now" is refused with the reason, and the gateway never sees the card again.
    case2, _ = open_case(InvoiceFactory(customer=customer), decline_code="insufficient_funds")
    with pytest.raises(DunningError, match="cannot be charged again"):
        retry_now(case2)
    assert SandboxCharge.objects.filter(token=card.token).count() == 1


def test_staff_retry_now_respects_the_network_limit(defaults, clock):
    customer = CustomerFactory()
    card = PaymentMethodFactory(customer=customer, brand="mastercard", token="tok_insufficient_funds:lim")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice)
    for _ in range(10):
        retry_now(case)
        clock.advance(minutes=30)
    with pytest.raises(DunningError, match="network retry limit"):
        retry_now(case)
    assert SandboxCharge.objects.filter(token=card.token).count() == 10


def test_a_hard_decline_reported_by_the_billing_system_stops_retries_before_the_first(defaults, clock):
    customer = CustomerFactory()
    card = PaymentMethodFactory(customer=customer, token="tok_ok:lost")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice, decline_code="lost_card")
    case.refresh_from_db()
    assert case.retry_state == DunningCase.RetryState.NEEDS_PAYMENT_METHOD
    run_hours(clock, T0, 10 * 24)
    assert not SandboxCharge.objects.filter(token=card.token).exists()
    assert not PaymentAttempt.objects.filter(invoice=invoice).exists()


def test_a_card_blocked_by_another_invoice_is_not_retried_and_the_case_asks_for_a_new_one(defaults, clock):
    customer = CustomerFactory(email="two@example.com")
    card = PaymentMethodFactory(customer=customer, token="tok_lost_card:two")
    first, second = InvoiceFactory(customer=customer), InvoiceFactory(customer=customer)
    open_case(first, decline_code="insufficient_funds")
    clock.advance(days=1)
    case2, _ = open_case(second, decline_code="insufficient_funds")
    run_hours(clock, T0, 5 * 24)   # first's day-3 retry: lost card. second's day-3 retry (day 4): skipped.
    assert SandboxCharge.objects.filter(token=card.token).count() == 1
    assert not PaymentAttempt.objects.filter(invoice=second).exists()
    case2.refresh_from_db()
    assert case2.retry_state == DunningCase.RetryState.NEEDS_PAYMENT_METHOD
    assert case2.events.filter(kind="case.needs_payment_method").count() == 1
    assert WorkItem.objects.filter(case=case2, kind="needs_payment_method").count() == 1
    # One message per case (the second may wait for the notifications' contact cap).
    assert Notification.objects.filter(template_code="update_payment_method").count() == 2

    card.is_default = False
    card.save()
    retry_after_method_update(customer, PaymentMethodFactory(customer=customer, token="tok_ok:two-new"))
    assert set(DunningCase.objects.values_list("status", flat=True)) == {"recovered"}
    assert not WorkItem.objects.exclude(status="done").exists()   # the staff queue is cleared too


def test_a_new_payment_method_gets_one_immediate_retry_of_every_open_invoice(defaults, clock):
    customer = CustomerFactory()
    old = PaymentMethodFactory(customer=customer, token="tok_expired_card:old")
    first, second = InvoiceFactory(customer=customer), InvoiceFactory(customer=customer, amount_due="10.00")
    open_case(first, decline_code="expired_card")
    open_case(second, decline_code="expired_card")
    assert set(DunningCase.objects.values_list("retry_state", flat=True)) == {"needs_payment_method"}

    old.is_default = False
    old.save()
    new = PaymentMethodFactory(customer=customer, token="tok_ok:new")
    attempts = retry_after_method_update(customer, new)
    assert [a.outcome for a in attempts] == ["succeeded", "succeeded"]
    assert set(DunningCase.objects.values_list("status", flat=True)) == {"recovered"}
    # A second update notice (double submit, replayed webhook) charges nothing more.
    retry_after_method_update(customer, new)
    assert SandboxCharge.objects.filter(token=new.token).count() == 2


def test_advice_code_retry_after_is_honoured(defaults, clock):
    """Mastercard advice code 28: retry after 6 days. The day-7 retry waits until day 9."""
    customer = CustomerFactory()
    PaymentMethodFactory(customer=customer, brand="mastercard", token="tok_advice_28:m")
    invoice = InvoiceFactory(customer=customer)
    open_case(invoice, decline_code="do_not_honor")
    run_hours(clock, T0, 9 * 24 + 2)
    times = attempt_times(invoice)
    assert times == [T0 + 3 * DAY, T0 + 9 * DAY]
    assert PaymentAttempt.objects.filter(invoice=invoice, advice_code="28").count() == 2


def test_a_processing_error_is_retried_soon_a_bounded_number_of_times(defaults, clock):
    customer = CustomerFactory()
    PaymentMethodFactory(customer=customer, token="tok_processing_error:p")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice, decline_code="insufficient_funds")
    run_hours(clock, T0, 4 * 24)
    times = attempt_times(invoice)
    # Day 3 at 10:00, then two quick retries an hour apart (the default policy), then nothing until day 7.
    assert times == [T0 + 3 * DAY, T0 + 3 * DAY + HOUR, T0 + 3 * DAY + 2 * HOUR]
    case.refresh_from_db()
    assert case.quick_retries == 2
    assert case.next_step.offset_days == 5  # the campaign carries on with its reminder


def test_the_engine_decides_a_batch_of_retries_with_a_fixed_number_of_queries(defaults, clock,
                                                                              django_assert_max_num_queries):
    for i in range(30):
        customer = CustomerFactory(timezone=["UTC", "Europe/Rome", "Asia/Tokyo"][i % 3])
        PaymentMethodFactory(customer=customer, brand=["visa", "mastercard"][i % 2],
                             token=f"tok_insufficient_funds:{i}")
        open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()  # day 0: first notices
    clock.advance(days=3)
    with django_assert_max_num_queries(20):
        assert engine.run_due_steps(batch_size=100) == 30
    assert Counter(DunningCase.objects.values_list("retry_state", flat=True)) == {"scheduled": 10, "deferred": 20}


def test_timeout_after_the_charge_is_reconciled_with_the_same_key_never_charged_twice(defaults, clock):
    customer = CustomerFactory()
    card = PaymentMethodFactory(customer=customer, token="tok_timeout_after_charge:t")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice)
    clock.move_to(T0 + 3 * DAY)
    clock.tick()
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    assert attempt.outcome == "pending"
    assert case.events.filter(kind="payment.outcome_unknown").count() == 1
    assert SandboxCharge.objects.filter(token=card.token).count() == 1
    clock.tick()  # the lease and backoff have not run out: nobody asks again yet
    assert PaymentAttempt.objects.get(pk=attempt.pk).tries == 1
    clock.advance(minutes=10)
    clock.tick()
    attempt.refresh_from_db()
    case.refresh_from_db()
    assert (attempt.outcome, attempt.tries) == ("succeeded", 2)
    assert case.status == DunningCase.Status.RECOVERED
    assert SandboxCharge.objects.filter(token=card.token).count() == 1
    assert PaymentAttempt.objects.filter(invoice=invoice).count() == 1
    assert Notification.objects.filter(template_code="update_payment_method").count() == 0
    assert PaymentMethod.objects.get(pk=card.pk).charge_blocked_at is None
