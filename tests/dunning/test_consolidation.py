"""Billing contacts, escalation to the account owner, and one reminder per customer and step."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core import mail

from billing.models import PaymentAttempt
from customers.models import BillingContact
from dunning import engine
from dunning.cases import open_case
from dunning.models import CampaignStep
from notifications import services as outbox
from notifications.models import Notification
from tests.factories import (
    BillingContactFactory,
    CampaignFactory,
    CampaignStepFactory,
    CustomerFactory,
    InvoiceFactory,
    PaymentMethodFactory,
)
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


def run_days(clock, start: datetime.datetime, days: int) -> None:
    for hour in range(days * 24 + 1):
        clock.move_to(start + datetime.timedelta(hours=hour))
        clock.tick()


@pytest.mark.parametrize("batch_size", [500, 1])
def test_three_overdue_invoices_get_one_message_per_step_and_separate_retries(defaults, clock, settings,
                                                                               batch_size):
    settings.DUNNING_BATCH_SIZE = batch_size  # 1: each case in its own batch, as with several workers
    customer = CustomerFactory(email="three@example.com")
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:three")
    invoices = [InvoiceFactory(customer=customer, amount_due=Decimal(a)) for a in ("10.00", "20.00", "30.00")]
    cases = [open_case(inv, decline_code="insufficient_funds")[0] for inv in invoices]

    run_days(clock, T0, 30)

    numbers = ", ".join(inv.number for inv in invoices)
    received = [m for m in mail.outbox if m.to == ["three@example.com"]]
    assert [m.subject for m in received] == [
        f"We couldn't process your payment for invoice {numbers}",
        f"Reminder: invoice {numbers} is still unpaid",
        f"Final notice: invoice {numbers} must be paid to avoid suspension",
        f"Your service has been suspended: invoice {numbers} is unpaid",
    ]
    first = received[0].body
    assert "$60.00" in first
    for inv, amount in zip(invoices, ("$10.00", "$20.00", "$30.00"), strict=True):
        assert f"- {inv.number}: {amount}" in first
    assert Notification.objects.count() == 4
    # Each retry step charged each invoice on its own, under its own key.
    attempts = PaymentAttempt.objects.filter(source="retry")
    assert attempts.count() == 6
    assert len(set(attempts.values_list("idempotency_key", flat=True))) == 6
    assert sorted(attempts.values_list("amount", flat=True)) == [Decimal("10.00")] * 2 + [
        Decimal("20.00")] * 2 + [Decimal("30.00")] * 2
    # Every case's timeline shows the step's message, with the invoices it listed.
    for case in cases:
        noted = case.events.filter(kind__in=["message.queued", "message.consolidated"])
        assert noted.count() == 4
        assert noted.first().payload["invoices"] == [inv.number for inv in invoices]


def test_a_single_invoice_keeps_its_own_message_key(defaults, clock):
    customer = CustomerFactory()
    case, _ = open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    case.refresh_from_db()
    row = Notification.objects.get()
    assert row.dedupe_key == f"case:{case.pk}:step:{case.current_step_id}:email"


def test_running_the_same_steps_again_queues_nothing_more(defaults, clock):
    customer = CustomerFactory()
    for _ in range(3):
        open_case(InvoiceFactory(customer=customer))
    assert engine.run_due_steps() == 3
    assert engine.run_due_steps() == 0
    assert Notification.objects.count() == 1


def escalation_campaign():
    campaign = CampaignFactory()
    CampaignStepFactory(campaign=campaign, position=1, offset_days=0, template_code="first_notice")
    CampaignStepFactory(campaign=campaign, position=2, offset_days=2, template_code="reminder",
                        escalate_to=BillingContact.Role.OWNER)
    CampaignStepFactory(campaign=campaign, position=3, offset_days=4, template_code="final_notice")
    return campaign


def test_escalation_adds_the_account_owner_from_the_step_that_says_so(defaults, clock):
    customer = CustomerFactory(email="general@example.com")
    BillingContactFactory(customer=customer, email="ap@example.com", is_primary=True)
    BillingContactFactory(customer=customer, email="boss@example.com", role=BillingContact.Role.OWNER)
    BillingContactFactory(customer=customer, email="tech@example.com", role=BillingContact.Role.TECHNICAL)
    campaign = escalation_campaign()
    open_case(InvoiceFactory(customer=customer), campaign=campaign)

    def recipients_on(day: int) -> list[str]:
        clock.move_to(T0 + datetime.timedelta(days=day))
        engine.run_due_steps()
        outbox.send_queued()  # as the sender would, before a newer step supersedes an unsent message
        return sorted(Notification.objects.filter(created_at=clock.now).values_list("recipient", flat=True))

    assert recipients_on(0) == ["ap@example.com"]
    assert recipients_on(2) == ["ap@example.com", "boss@example.com"]
    assert recipients_on(4) == ["ap@example.com", "boss@example.com"]  # "from this step on"
    outbox.send_queued()
    assert not [m for m in mail.outbox if m.to in (["tech@example.com"], ["general@example.com"])]
    assert len([m for m in mail.outbox if m.to == ["boss@example.com"]]) == 2


def test_all_contacts_in_their_own_language(defaults, clock):
    customer = CustomerFactory(email="general@example.com", locale="en")
    BillingContactFactory(customer=customer, name="Ana", email="ana@example.com", is_primary=True)
    BillingContactFactory(customer=customer, name="Luca", email="luca@example.com", language="it")
    BillingContactFactory(customer=customer, name="Phone only", email="", phone="+14155550123")
    campaign = CampaignFactory()
    CampaignStepFactory(campaign=campaign, position=1, template_code="reminder", audience="all")
    open_case(InvoiceFactory(customer=customer), campaign=campaign)
    engine.run_due_steps()
    rows = {n.recipient: n for n in Notification.objects.all()}
    assert set(rows) == {"ana@example.com", "luca@example.com"}
    assert rows["luca@example.com"].locale == "it" and rows["ana@example.com"].locale == "en"
    assert rows["luca@example.com"].context["contact_name"] == "Luca"
    # No Italian template yet: the English one is sent rather than nothing.
    assert outbox.send_queued() == 2


def test_contacts_without_an_address_fall_back_to_the_customer(defaults, clock):
    customer = CustomerFactory(email="general@example.com")
    BillingContactFactory(customer=customer, email="", phone="+14155550123", is_primary=True)
    open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    assert list(Notification.objects.values_list("recipient", flat=True)) == ["general@example.com"]


def test_step_choices_are_on_the_step(defaults):
    step = CampaignStep(campaign=CampaignFactory(), position=1, action="email", template_code="reminder",
                        audience="all", escalate_to="owner")
    step.full_clean()
    step.escalate_to = "boss"
    with pytest.raises(Exception):  # noqa: B017
        step.full_clean()


def test_consolidation_can_be_switched_off(defaults, clock, settings):
    settings.DUNNING_CONSOLIDATE_MESSAGES = False
    customer = CustomerFactory()
    for _ in range(3):
        open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    assert Notification.objects.count() == 3
