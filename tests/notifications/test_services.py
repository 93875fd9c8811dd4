"""Delivery guarantees: the outbox survives crashes without sending twice; failures retry or land
on the case timeline."""

from __future__ import annotations

import datetime

import pytest
from django.core import mail
from django.urls import reverse

from core import bulk
from dunning import engine
from dunning.cases import open_case
from dunning.models import CaseEvent
from notifications import inapp
from notifications import services as outbox
from notifications.channels import base as channels
from notifications.models import Notification
from tests.factories import CustomerFactory, InvoiceFactory
from tests.support.clock import T0
from tests.support.notifications import sms_outbox_fixture  # noqa: F401

pytestmark = pytest.mark.django_db


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no handler swallows it."""


def test_a_crash_between_writing_and_sending_sends_exactly_one_message(defaults, clock):
    customer = CustomerFactory(email="c@example.com")
    open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    # The worker dies here: the step and its outbox row are committed, nothing was sent.
    assert Notification.objects.filter(status="queued").count() == 1
    # After the restart the engine runs again and two senders race for the queue.
    assert engine.run_due_steps() == 0
    assert outbox.send_queued() == 1
    assert outbox.send_queued() == 0
    engine.run_due_steps()
    outbox.send_queued()
    assert [m.to for m in mail.outbox] == [["c@example.com"]]


def test_a_crash_inside_the_engine_batch_writes_nothing_and_the_rerun_sends_once(defaults, clock, monkeypatch):
    customer = CustomerFactory(email="r@example.com")
    case, _ = open_case(InvoiceFactory(customer=customer))

    def die(*args, **kwargs):
        raise Crash

    real_insert = bulk.insert_rows

    def die_on_events(model, *args, **kwargs):
        if model is CaseEvent:
            raise Crash
        return real_insert(model, *args, **kwargs)

    with monkeypatch.context() as patch:
        # The timeline is written last, by core.bulk (bulk_create where there is no fast path).
        patch.setattr(CaseEvent.objects, "bulk_create", die)
        patch.setattr(bulk, "insert_rows", die_on_events)
        with pytest.raises(Crash):
            engine.run_due_steps()
    # The outbox row was written in the same transaction as the step: both rolled back.
    assert Notification.objects.count() == 0
    assert not case.events.filter(kind="message.queued").exists()
    clock.tick()
    clock.tick()
    assert [m.to for m in mail.outbox] == [["r@example.com"]]


def test_a_crash_after_the_provider_took_the_message_never_sends_it_again(defaults, clock, monkeypatch):
    customer = CustomerFactory(email="p@example.com")
    case, _ = open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    real_send = channels.send_email

    def send_then_die(notification, connection=None):
        real_send(notification, connection)
        raise Crash

    monkeypatch.setitem(channels.SENDERS, "email", send_then_die)
    with pytest.raises(Crash):
        outbox.send_queued()
    monkeypatch.setitem(channels.SENDERS, "email", real_send)
    # Restarted senders skip the row the dead worker held ...
    assert outbox.release_stuck() == 0
    assert outbox.send_queued() == 0
    clock.advance(minutes=6)
    # ... and after the lease its fate is unknown (shown on the timeline), and it is not sent again.
    assert outbox.release_stuck() == 1
    assert outbox.send_queued() == 0
    clock.advance(days=1)
    assert outbox.release_stuck() == 0 and outbox.send_queued() == 0
    assert len(mail.outbox) == 1
    assert Notification.objects.get().status == "unknown"
    assert "not sent again automatically" in case.events.get(kind="message.unknown").message


def test_an_error_mid_batch_puts_the_messages_not_yet_attempted_back_in_the_queue(defaults, clock, monkeypatch):
    customers = [CustomerFactory(email=f"b{i}@example.com") for i in range(3)]
    for customer in customers:
        open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    real_send = channels.send_email
    calls = []

    def die_on_second(notification, connection=None):
        calls.append(notification.recipient)
        if len(calls) == 2:
            raise Crash  # inside the second provider call
        return real_send(notification, connection)

    monkeypatch.setitem(channels.SENDERS, "email", die_on_second)
    with pytest.raises(Crash):
        outbox.send_queued()
    monkeypatch.undo()
    # The third row was never attempted: queued again at once (a kill -9 leaves it to the lease).
    assert sorted(Notification.objects.values_list("status", flat=True)) == ["queued", "sending", "sent"]
    assert outbox.send_queued() == 1
    clock.advance(minutes=6)
    assert outbox.release_stuck() == 1
    assert outbox.send_queued() == 0
    assert sorted(Notification.objects.values_list("status", flat=True)) == ["sent", "sent", "unknown"]
    assert sorted(m.to[0] for m in mail.outbox) == ["b0@example.com", "b2@example.com"]


def test_a_message_of_unknown_fate_can_be_resent_by_staff_once(defaults, clock, admin_client, admin_user,
                                                               monkeypatch):
    customer = CustomerFactory(email="u@example.com")
    case, _ = open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()

    def die(notification, connection=None):
        raise Crash

    monkeypatch.setitem(channels.SENDERS, "email", die)
    with pytest.raises(Crash):
        outbox.send_queued()
    monkeypatch.undo()
    clock.advance(minutes=6)
    outbox.release_stuck()
    row = Notification.objects.get()
    url = reverse("admin:notifications_notification_changelist")
    assert "Unknown (sender stopped)" in admin_client.get(url + "?status__exact=unknown").text
    for _ in range(2):  # a second click does not queue a second copy
        response = admin_client.post(url, {"action": "resend_action", "_selected_action": [row.pk]}, follow=True)
    assert "already resent" in response.text and "0 message" not in response.text
    copy = Notification.objects.get(dedupe_key=f"resend:{row.pk}")
    assert copy.status == "queued" and copy.template_code == row.template_code
    event = case.events.get(kind="message.resent")
    assert event.actor == admin_user and f"queued again as message {copy.pk}" in event.message
    assert outbox.send_queued() == 1
    assert [m.to for m in mail.outbox] == [["u@example.com"]]
    row.refresh_from_db()
    assert row.status == "unknown" and f"Resent as message {copy.pk} by admin" in row.last_error


def test_an_sms_of_unknown_fate_is_sent_again_with_its_idempotency_key(defaults, clock, sms_outbox, monkeypatch):
    customer = CustomerFactory(email="", phone="+14155550123")
    open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    real_send = channels.send_sms_message

    def send_then_die(notification, connection=None):
        real_send(notification, connection)
        raise Crash

    monkeypatch.setitem(channels.SENDERS, "sms", send_then_die)
    with pytest.raises(Crash):
        outbox.send_queued()
    monkeypatch.undo()
    clock.advance(minutes=6)
    # The provider deduplicates by the key: sending again cannot double the message, so no "unknown".
    assert outbox.release_stuck() == 1
    assert outbox.send_queued() == 1
    row = Notification.objects.get()
    assert row.status == "sent" and row.provider_message_id == sms_outbox[0]["id"]
    assert len(sms_outbox) == 1 and sms_outbox[0]["idempotency_key"] == f"notification-{row.pk}"


def test_transient_failures_retry_with_backoff_then_succeed(defaults, clock, monkeypatch):
    customer = CustomerFactory(email="t@example.com")
    case, _ = open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    real_send = channels.send_email
    failures = iter([True, True, False])

    def flaky(notification, connection=None):
        if next(failures):
            raise channels.DeliveryError("SMTP 451 try again later", permanent=False)
        return real_send(notification, connection)

    monkeypatch.setitem(channels.SENDERS, "email", flaky)
    assert outbox.send_queued() == 0
    row = Notification.objects.get()
    assert row.status == "queued" and row.send_after == T0 + datetime.timedelta(minutes=1)
    clock.advance(minutes=1)
    assert outbox.send_queued() == 0
    row.refresh_from_db()
    assert row.send_after == T0 + datetime.timedelta(minutes=3)  # then 2 minutes later
    clock.advance(minutes=2)
    assert outbox.send_queued() == 1
    row.refresh_from_db()
    assert row.status == "sent" and row.attempts == 3
    assert len(mail.outbox) == 1
    assert not case.events.filter(kind="message.failed").exists()


def test_a_permanent_failure_is_marked_with_its_reason_on_the_case_timeline(defaults, clock, monkeypatch):
    customer = CustomerFactory(email="bad@example.com")
    case, _ = open_case(InvoiceFactory(customer=customer))

    def refuse(notification, connection=None):
        raise channels.DeliveryError("AnymailRecipientsRefused: invalid mailbox", permanent=True)

    monkeypatch.setitem(channels.SENDERS, "email", refuse)
    clock.tick()
    row = Notification.objects.get()
    assert row.status == "failed" and "invalid mailbox" in row.last_error
    event = case.events.get(kind="message.failed")
    assert "first_notice failed (email): AnymailRecipientsRefused: invalid mailbox" == event.message


def test_inapp_messages_are_stored_per_customer_with_read_and_dismissed_state(defaults, clock):
    customer = CustomerFactory(email="", locale="es")
    other = CustomerFactory(email="")
    for who in (customer, other):
        open_case(InvoiceFactory(customer=who))
    clock.tick()  # no email address: the first notice falls back to an in-app message
    [message] = inapp.messages_for(customer)
    assert message.subject == "No hemos podido procesar su pago" and message.sent_at == T0
    assert inapp.unread_count(customer) == 1
    assert inapp.mark_read(message) and not inapp.mark_read(message)
    assert inapp.unread_count(customer) == 0
    assert inapp.dismiss(message) and not inapp.dismiss(message)
    assert list(inapp.messages_for(customer)) == []
    assert inapp.messages_for(other).count() == 1
