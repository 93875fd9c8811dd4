"""Pre-dunning: "your card expires soon" at 30 and 7 days, each once, stopped by an update; and the
optional reminder before an invoice without automatic payment is due."""

from __future__ import annotations

import datetime

import pytest
from django.core import mail
from django_q.models import Schedule

from core.schedules import ensure_schedules
from dunning import predunning, tasks
from notifications import services as outbox
from notifications.models import Notification
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory

pytestmark = pytest.mark.django_db
UTC = datetime.UTC


def run_job(clock, when: datetime.datetime) -> list[str]:
    """Run the hourly job twice at `when` (as a re-delivered task would) and send; returns new subjects."""
    clock.move_to(when)
    before = len(mail.outbox)
    tasks.send_predunning_reminders()
    tasks.send_predunning_reminders()
    outbox.send_queued()
    return [m.subject for m in mail.outbox[before:]]


def test_expiring_card_gets_a_reminder_at_30_and_at_7_days_each_once(defaults, clock):
    customer = CustomerFactory(email="exp@example.com")
    PaymentMethodFactory(customer=customer, brand="visa", last4="1111", exp_month=4, exp_year=2026)
    PaymentMethodFactory(customer=CustomerFactory(), exp_month=4, exp_year=2026, is_default=False)  # not charged
    PaymentMethodFactory(customer=CustomerFactory(), exp_month=12, exp_year=2030)                 # far away
    subject = "Your card ending in 1111 expires soon"

    assert run_job(clock, datetime.datetime(2026, 3, 2, 10, tzinfo=UTC)) == []      # 59 days left
    assert run_job(clock, datetime.datetime(2026, 4, 1, 10, tzinfo=UTC)) == [subject]  # 29 days
    assert run_job(clock, datetime.datetime(2026, 4, 10, 10, tzinfo=UTC)) == []      # already reminded
    assert run_job(clock, datetime.datetime(2026, 4, 23, 10, tzinfo=UTC)) == [subject]  # 7 days
    assert run_job(clock, datetime.datetime(2026, 4, 29, 10, tzinfo=UTC)) == []
    assert run_job(clock, datetime.datetime(2026, 5, 2, 10, tzinfo=UTC)) == []       # expired: dunning's job
    assert Notification.objects.filter(template_code="card_expiring").count() == 2
    assert [m.to for m in mail.outbox] == [["exp@example.com"], ["exp@example.com"]]


def test_updating_the_card_stops_the_reminders(defaults, clock):
    customer = CustomerFactory()
    card = PaymentMethodFactory(customer=customer, exp_month=4, exp_year=2026)
    assert len(run_job(clock, datetime.datetime(2026, 4, 1, 10, tzinfo=UTC))) == 1
    card.exp_year = 2029  # the portal or a payment_method.updated webhook
    card.save()
    assert run_job(clock, datetime.datetime(2026, 4, 24, 10, tzinfo=UTC)) == []

    other = CustomerFactory()
    old = PaymentMethodFactory(customer=other, exp_month=5, exp_year=2026)
    assert len(run_job(clock, datetime.datetime(2026, 5, 2, 10, tzinfo=UTC))) == 1
    old.is_default = False  # replaced by a new card
    old.save()
    PaymentMethodFactory(customer=other, exp_month=1, exp_year=2031)
    assert run_job(clock, datetime.datetime(2026, 5, 25, 10, tzinfo=UTC)) == []


def test_the_window_and_thresholds_are_configurable(defaults, clock, settings):
    settings.CARD_EXPIRY_REMINDER_DAYS = [14]
    PaymentMethodFactory(exp_month=4, exp_year=2026)
    assert run_job(clock, datetime.datetime(2026, 4, 1, 10, tzinfo=UTC)) == []        # 29 days: outside
    assert len(run_job(clock, datetime.datetime(2026, 4, 17, 10, tzinfo=UTC))) == 1   # 13 days


def test_reminder_before_due_date_for_invoices_without_automatic_payment(defaults, clock, settings):
    settings.INVOICE_DUE_REMINDER_DAYS = 3
    manual = InvoiceFactory(auto_collect=False, due_date=datetime.date(2026, 3, 10), number="INV-MANUAL")
    InvoiceFactory(auto_collect=True, due_date=datetime.date(2026, 3, 10))
    InvoiceFactory(auto_collect=False, due_date=datetime.date(2026, 3, 10), status="paid")
    assert run_job(clock, datetime.datetime(2026, 3, 6, 10, tzinfo=UTC)) == []        # 4 days before
    subjects = run_job(clock, datetime.datetime(2026, 3, 7, 10, tzinfo=UTC))
    assert subjects == ["Invoice INV-MANUAL is due on March 10, 2026"]
    assert run_job(clock, datetime.datetime(2026, 3, 8, 10, tzinfo=UTC)) == []
    assert Notification.objects.get(template_code="invoice_due_soon").reference == f"invoice:{manual.pk}"


def test_the_invoice_reminder_is_off_by_default(defaults, clock):
    InvoiceFactory(auto_collect=False, due_date=datetime.date(2026, 3, 3))
    assert predunning.invoice_due_reminders() == 0


def test_the_job_is_scheduled_hourly(db):
    ensure_schedules()
    ensure_schedules()
    schedule = Schedule.objects.get(name="Send pre-dunning reminders")
    assert (schedule.func, schedule.minutes) == ("dunning.tasks.send_predunning_reminders", 60)
