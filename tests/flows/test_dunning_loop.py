"""The whole dunning loop with a frozen, advancing clock."""

from __future__ import annotations

import datetime

import pytest
from django.core import mail

from billing.models import Invoice, PaymentAttempt
from customers.models import Customer
from dunning import engine
from dunning.cases import cancel_case, open_case, pause_case, resume_case
from dunning.errors import DunningError
from dunning.models import CaseEvent, DunningCase
from dunning.payments import record_payment, retry_now
from dunning.receipts import mark_paid
from notifications.models import Notification
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


def subjects_for(email: str) -> list[str]:
    return [m.subject for m in mail.outbox if m.to == [email]]


def run_days(clock, start: datetime.datetime, days: int) -> None:
    """Tick every hour for `days` days from `start`, as the every-minute schedule would."""
    for hour in range(days * 24 + 1):
        clock.move_to(start + datetime.timedelta(hours=hour))
        clock.tick()


def test_one_customer_recovers_at_day_7_and_another_is_suspended(defaults, clock):
    fixer = CustomerFactory(name="Fixer", email="fixer@example.com")
    old_card = PaymentMethodFactory(customer=fixer, token="tok_insufficient_funds:fixer")
    never = CustomerFactory(name="Never", email="never@example.com")
    PaymentMethodFactory(customer=never, token="tok_insufficient_funds:never")
    inv_fixer = InvoiceFactory(customer=fixer, amount_due="120.00")
    inv_never = InvoiceFactory(customer=never, amount_due="80.00")

    case_fixer, created = open_case(inv_fixer, decline_code="insufficient_funds")
    assert created
    case_never, _ = open_case(inv_never, decline_code="insufficient_funds")

    # Days 0..6: first notice, a declined retry at day 3, a reminder at day 5.
    run_days(clock, T0, 6)
    assert subjects_for("fixer@example.com") == [
        "We couldn't process your payment for invoice " + inv_fixer.number,
        "Reminder: invoice " + inv_fixer.number + " is still unpaid",
    ]
    assert PaymentAttempt.objects.filter(invoice=inv_fixer, outcome="failed").count() == 1

    # The customer fixes the card before day 7.
    old_card.is_default = False
    old_card.save()
    PaymentMethodFactory(customer=fixer, token="tok_ok:fixer")

    # Day 7 onwards: the retry succeeds, the case is recovered and nothing else happens for fixer.
    run_days(clock, T0 + datetime.timedelta(days=6, hours=1), 30)

    case_fixer.refresh_from_db()
    inv_fixer.refresh_from_db()
    assert case_fixer.status == DunningCase.Status.RECOVERED
    assert case_fixer.closed_at == T0 + datetime.timedelta(days=7)
    assert inv_fixer.status == Invoice.Status.PAID
    assert inv_fixer.amount_paid == inv_fixer.amount_due
    assert PaymentAttempt.objects.filter(invoice=inv_fixer).count() == 2
    assert subjects_for("fixer@example.com") == [
        "We couldn't process your payment for invoice " + inv_fixer.number,
        "Reminder: invoice " + inv_fixer.number + " is still unpaid",
    ]
    kinds = list(case_fixer.events.values_list("kind", flat=True))
    assert kinds.count("case.recovered") == 1
    assert "step.retry" in kinds and kinds[-1] == "case.recovered"

    # The customer who never pays: every message once, suspended at day 14, uncollectible at the end.
    case_never.refresh_from_db()
    inv_never.refresh_from_db()
    never.refresh_from_db()
    assert subjects_for("never@example.com") == [
        "We couldn't process your payment for invoice " + inv_never.number,
        "Reminder: invoice " + inv_never.number + " is still unpaid",
        "Final notice: invoice " + inv_never.number + " must be paid to avoid suspension",
        "Your service has been suspended: invoice " + inv_never.number + " is unpaid",
    ]
    assert never.status == Customer.Status.SUSPENDED
    assert never.suspended_at == T0 + datetime.timedelta(days=14)
    assert inv_never.status == Invoice.Status.UNCOLLECTIBLE
    assert case_never.status == DunningCase.Status.EXHAUSTED
    assert PaymentAttempt.objects.filter(invoice=inv_never).count() == 2
    assert Notification.objects.filter(status="sent").count() == 6
    assert CaseEvent.objects.filter(case=case_never, kind="case.exhausted").count() == 1


def test_running_due_steps_twice_at_the_same_instant_does_nothing_the_second_time(defaults, clock):
    customers = CustomerFactory.create_batch(5)
    for customer in customers:
        PaymentMethodFactory(customer=customer)
        open_case(InvoiceFactory(customer=customer))
    assert engine.run_due_steps() == 5
    events = CaseEvent.objects.count()
    notifications = Notification.objects.count()
    assert engine.run_due_steps() == 0
    assert CaseEvent.objects.count() == events
    assert Notification.objects.count() == notifications == 5


def test_payment_from_outside_recovers_a_suspended_customer_and_cancels_unsent_messages(defaults, clock):
    customer = CustomerFactory()
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:x")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice)
    run_days(clock, T0, 14)
    customer.refresh_from_db()
    assert customer.status == Customer.Status.SUSPENDED
    # A message queued but not yet sent when the payment lands is cancelled.
    clock.advance(days=14)  # day 28's step becomes due but has not run
    record_payment(invoice, invoice.amount_remaining)
    case.refresh_from_db()
    customer.refresh_from_db()
    assert case.status == DunningCase.Status.RECOVERED
    assert customer.status == Customer.Status.ACTIVE
    assert case.events.filter(kind="customer.reinstated").count() == 1
    assert engine.run_due_steps() == 0
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID


def test_second_failure_of_the_same_invoice_does_not_open_a_second_case(defaults, clock):
    invoice = InvoiceFactory()
    first, created = open_case(invoice, decline_code="insufficient_funds")
    again, created_again = open_case(invoice, decline_code="do_not_honor")
    assert created and not created_again
    assert first.pk == again.pk
    assert DunningCase.objects.count() == 1
    assert first.events.filter(kind="payment.failed").count() == 1


def test_the_scheduled_task_hands_retries_and_messages_to_their_own_tasks(defaults, clock,
                                                                         django_capture_on_commit_callbacks):
    from dunning import tasks

    customer = CustomerFactory(email="task@example.com")
    PaymentMethodFactory(customer=customer, token="tok_ok:task")
    invoice = InvoiceFactory(customer=customer)
    open_case(invoice)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.run_due_steps() == 1  # day 0: the first notice
    assert subjects_for("task@example.com") == ["We couldn't process your payment for invoice " + invoice.number]
    clock.advance(days=3)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.run_due_steps() == 1  # day 3: the retry, charged by the follow-up task
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert DunningCase.objects.get().status == DunningCase.Status.RECOVERED


def test_staff_actions_pause_resume_cancel_and_mark_paid_leave_the_actor_on_the_timeline(defaults, clock):
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_user("agent", password="x", is_staff=True)
    case, _ = open_case(InvoiceFactory())
    pause_case(case, actor=staff)
    assert engine.run_due_steps() == 0  # a paused case does not run
    with pytest.raises(DunningError, match="only active cases can be paused"):
        pause_case(case, actor=staff)
    clock.advance(days=2)
    resume_case(case, actor=staff)
    case.refresh_from_db()
    assert case.next_action_at == clock.now  # the missed day-0 step runs now
    mark_paid(case, actor=staff)
    case.refresh_from_db()
    assert case.status == DunningCase.Status.RECOVERED
    assert list(case.events.filter(actor=staff).values_list("kind", flat=True)) == [
        "case.paused", "case.resumed", "case.recovered"]
    with pytest.raises(DunningError, match="already recovered"):
        cancel_case(case, actor=staff)


def test_retry_now_charges_once_and_recovers(defaults, clock):
    customer = CustomerFactory()
    PaymentMethodFactory(customer=customer, token="tok_succeed_after_2:r")
    case, _ = open_case(InvoiceFactory(customer=customer))
    first = retry_now(case)
    assert first.outcome == PaymentAttempt.Outcome.FAILED and first.decline_code == "insufficient_funds"
    second = retry_now(case)
    assert second.outcome == PaymentAttempt.Outcome.SUCCEEDED
    case.refresh_from_db()
    assert case.status == DunningCase.Status.RECOVERED
    with pytest.raises(DunningError, match="nothing to retry"):
        retry_now(case)


def test_paying_after_the_campaign_ended_still_reinstates_service(defaults, clock):
    customer = CustomerFactory()
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:late")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice)
    run_days(clock, T0, 29)
    case.refresh_from_db()
    invoice.refresh_from_db()
    assert case.status == DunningCase.Status.EXHAUSTED and invoice.status == Invoice.Status.UNCOLLECTIBLE
    record_payment(invoice, invoice.amount_remaining)
    customer.refresh_from_db()
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert customer.status == Customer.Status.ACTIVE
    assert case.events.filter(kind="payment.after_close").count() == 1


def test_another_unpaid_suspending_invoice_keeps_the_service_suspended(defaults, clock):
    customer = CustomerFactory()
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:two")
    first, second = InvoiceFactory(customer=customer), InvoiceFactory(customer=customer)
    open_case(first)
    open_case(second)
    run_days(clock, T0, 15)
    customer.refresh_from_db()
    assert customer.status == Customer.Status.SUSPENDED
    record_payment(first, first.amount_remaining)
    customer.refresh_from_db()
    assert customer.status == Customer.Status.SUSPENDED  # the second invoice is still unpaid
    record_payment(second, second.amount_remaining)
    customer.refresh_from_db()
    assert customer.status == Customer.Status.ACTIVE
