"""Respect rules: quiet hours in the customer's time zone, the contact cap, opt-outs and fallback."""

from __future__ import annotations

import datetime

import pytest
from django.core import mail

from dunning.cases import open_case
from dunning.models import CaseEvent
from notifications import policy
from notifications import services as outbox
from notifications.models import MessageTemplate, Notification
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.clock import T0
from tests.support.notifications import emails_to, run_hours, sms_outbox_fixture  # noqa: F401

pytestmark = pytest.mark.django_db
UTC = datetime.UTC


@pytest.fixture(autouse=True)
def default_quiet_hours(settings):
    """The production default (the test settings turn quiet hours off for the rest of the suite)."""
    settings.NOTIFY_QUIET_HOURS = "21:00-08:00"


def at(*args) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=UTC)


# --- Quiet hours ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("tz", "moment", "expected"),
    [
        # 10:00 UTC is 19:00 in Tokyo: allowed.
        ("Asia/Tokyo", at(2026, 3, 2, 10, 0), at(2026, 3, 2, 10, 0)),
        # 13:00 UTC is 22:00 in Tokyo: waits for 08:00 Tokyo the next day (23:00 UTC).
        ("Asia/Tokyo", at(2026, 3, 2, 13, 0), at(2026, 3, 2, 23, 0)),
        # 10:00 UTC is 02:00 in Los Angeles (PST): waits for 08:00 PST (16:00 UTC) the same day.
        ("America/Los_Angeles", at(2026, 3, 2, 10, 0), at(2026, 3, 2, 16, 0)),
        # 20:59 in Rome (CET) is still allowed; 21:00 is not.
        ("Europe/Rome", at(2026, 3, 2, 19, 59), at(2026, 3, 2, 19, 59)),
        ("Europe/Rome", at(2026, 3, 2, 20, 0), at(2026, 3, 3, 7, 0)),
        # Kyiv, 07:59 local (05:59 UTC, EET): waits one minute.
        ("Europe/Kyiv", at(2026, 3, 2, 5, 59), at(2026, 3, 2, 6, 0)),
    ],
)
def test_quiet_hours_follow_the_customers_time_zone(tz, moment, expected):
    customer = CustomerFactory.build(timezone=tz)
    assert policy.first_allowed_at(customer, "email", moment) == expected
    assert policy.first_allowed_at(customer, "sms", moment) == expected
    # An in-app message interrupts nobody: shown at once.
    assert policy.first_allowed_at(customer, "inapp", moment) == moment


def test_quiet_hours_across_daylight_saving_changes():
    ny = CustomerFactory.build(timezone="America/New_York")
    # 01:30 EST the night before the change: 08:00 EST is 13:00 UTC.
    assert policy.first_allowed_at(ny, "email", at(2026, 3, 7, 6, 30)) == at(2026, 3, 7, 13, 0)
    # 01:30 EST on 8 March 2026, clocks jump to EDT at 02:00: 08:00 EDT is 12:00 UTC.
    assert policy.first_allowed_at(ny, "email", at(2026, 3, 8, 6, 30)) == at(2026, 3, 8, 12, 0)
    # Rome falls back on 25 October 2026: 22:30 CEST on the 24th waits for 08:00 CET (07:00 UTC).
    rome = CustomerFactory.build(timezone="Europe/Rome")
    assert policy.first_allowed_at(rome, "email", at(2026, 10, 24, 20, 30)) == at(2026, 10, 25, 7, 0)
    # The repeated hour after falling back (01:30 CET, second time) is still quiet.
    assert policy.first_allowed_at(rome, "email", at(2026, 10, 25, 0, 30)) == at(2026, 10, 25, 7, 0)


def test_quiet_hours_can_be_changed_or_turned_off(settings):
    customer = CustomerFactory.build(timezone="UTC")
    settings.NOTIFY_QUIET_HOURS = "22:00-07:00"
    assert policy.first_allowed_at(customer, "email", at(2026, 3, 2, 21, 30)) == at(2026, 3, 2, 21, 30)
    assert policy.first_allowed_at(customer, "email", at(2026, 3, 2, 6, 0)) == at(2026, 3, 2, 7, 0)
    settings.NOTIFY_QUIET_HOURS = ""
    assert policy.first_allowed_at(customer, "email", at(2026, 3, 2, 3, 0)) == at(2026, 3, 2, 3, 0)


def test_a_step_due_at_night_sends_in_the_morning_and_the_timeline_says_so(defaults, clock):
    # T0 is 10:00 UTC: 02:00 in Los Angeles.
    customer = CustomerFactory(timezone="America/Los_Angeles", email="la@example.com")
    case, _ = open_case(InvoiceFactory(customer=customer))
    clock.tick()
    assert emails_to("la@example.com") == []
    queued = case.events.get(kind="message.queued")
    assert "quiet hours" in queued.message and "08:00" in queued.message
    clock.move_to(at(2026, 3, 2, 15, 59))
    clock.tick()
    assert emails_to("la@example.com") == []
    clock.move_to(at(2026, 3, 2, 16, 0))
    clock.tick()
    assert len(emails_to("la@example.com")) == 1


def test_a_retry_that_lands_at_night_is_held_by_the_sender(defaults, clock):
    customer = CustomerFactory(timezone="Asia/Tokyo")
    case, _ = open_case(InvoiceFactory(customer=customer))
    row = outbox.build(customer, channel="email", template_code="reminder", context={}, dedupe_key="x",
                       reference=f"case:{case.pk}")
    outbox.queue([row])
    # 14:00 UTC is 23:00 in Tokyo: a row due now (e.g. after a transient failure) waits.
    Notification.objects.filter(dedupe_key="x").update(send_after=at(2026, 3, 2, 14, 0))
    clock.move_to(at(2026, 3, 2, 14, 0))
    assert outbox.send_queued() == 0
    row = Notification.objects.get(dedupe_key="x")
    assert row.status == "queued" and row.attempts == 0
    assert row.send_after == at(2026, 3, 2, 23, 0)
    assert "quiet hours" in case.events.get(kind="message.deferred").message
    clock.move_to(at(2026, 3, 2, 23, 0))
    assert outbox.send_queued() == 1


# --- Contact cap ----------------------------------------------------------------------------------

def test_the_contact_cap_over_a_busy_week(defaults, clock, settings):
    """Three invoices fail on three days in a row: the reminders would make six contacts in a week."""
    # One message per invoice, so that the cap alone keeps the count down (consolidation, which
    # would merge them, is tested in tests/dunning/test_consolidation.py).
    settings.DUNNING_CONSOLIDATE_MESSAGES = False
    customer = CustomerFactory(email="busy@example.com")
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:busy")
    cases = []
    for day in range(3):
        clock.move_to(T0 + datetime.timedelta(days=day))
        cases.append(open_case(InvoiceFactory(customer=customer))[0])
        clock.tick()
    run_hours(clock, T0 + datetime.timedelta(days=2), 24 * 14)

    sent = list(Notification.objects.filter(customer=customer, status="sent").order_by("sent_at", "pk"))
    # A reminder only went when fewer than 3 contacts (legal notices included) had gone in the
    # 7 days before it; legal notices are never held back but they do count.
    for n in sent:
        if policy.is_legal_notice(n.template_code):
            continue
        before = [m for m in sent if n.sent_at - datetime.timedelta(days=7) < m.sent_at <= n.sent_at
                  and (m.sent_at, m.pk) < (n.sent_at, n.pk)]
        assert len(before) < 3, (n.template_code, n.sent_at, [(m.template_code, m.sent_at) for m in before])
    assert [n.template_code for n in sent].count("first_notice") == 3
    # Every reminder was still delivered (later) or merged into a newer message, never lost silently.
    for case in cases:
        reminder = Notification.objects.get(reference=f"case:{case.pk}", template_code="reminder")
        assert reminder.status in ("sent", "cancelled")
        if reminder.status == "cancelled":
            assert case.events.filter(kind="message.merged").exists()
    deferred = CaseEvent.objects.filter(case__in=cases, kind="message.deferred")
    assert deferred.exists()
    assert all("contact cap reached (3 per 7 days)" in e.message for e in deferred)
    # Legal notices were never held back by the cap.
    assert not deferred.filter(message__contains="final_notice").exists()
    assert Notification.objects.filter(customer=customer, template_code="final_notice", status="sent").count() == 3


def test_receipts_are_not_counted_and_excess_is_merged_into_the_newer_message(defaults, clock, settings):
    MessageTemplate.objects.create(code="payment_receipt", channel="email", subject="Receipt",
                                   body_text="Thank you for your payment of {{ amount }}.")
    customer = CustomerFactory(email="m@example.com")
    case, _ = open_case(InvoiceFactory(customer=customer))
    ref = f"case:{case.pk}"
    for i, code in enumerate(["first_notice", "reminder", "card_expiring", "payment_receipt"]):
        row = outbox.build(customer, channel="email", template_code=code, context={}, dedupe_key=f"old{i}",
                           reference=ref if i < 2 else f"other:{i}")
        outbox.queue([row])
        outbox.send_queued()
    assert len(emails_to("m@example.com")) == 4  # the receipt went and does not count

    # A fourth contact in the week is deferred.
    outbox.queue([outbox.build(customer, channel="email", template_code="reminder", context={},
                                    dedupe_key="late-reminder", reference="case:999")])
    assert outbox.send_queued() == 0
    late = Notification.objects.get(dedupe_key="late-reminder")
    assert late.status == "queued" and late.send_after == T0 + datetime.timedelta(days=7)

    # Meanwhile the final notice for the same cause goes (legal notice), so the deferred reminder
    # is merged into it instead of arriving after it.
    outbox.queue([outbox.build(customer, channel="email", template_code="final_notice", context={},
                                    dedupe_key="final", reference="case:999")])
    clock.advance(hours=1)
    assert outbox.send_queued() == 1
    clock.advance(days=7)
    assert outbox.send_queued() == 0
    late.refresh_from_db()
    assert late.status == "cancelled"
    assert "merged into the newer final_notice" in late.last_error
    assert len(emails_to("m@example.com")) == 5



def test_a_final_notice_is_not_merged_into_a_newer_plain_reminder(defaults, clock):
    customer = CustomerFactory(email="legal@example.com")
    case, _ = open_case(InvoiceFactory(customer=customer))
    ref = f"case:{case.pk}"
    for code in ("final_notice", "update_payment_method"):  # the card was declined after the notice was queued
        outbox.queue([outbox.build(customer, channel="email", template_code=code, context={},
                                        dedupe_key=f"legal-{code}", reference=ref)])
        clock.advance(minutes=1)
    outbox.send_queued()
    notice = Notification.objects.get(dedupe_key="legal-final_notice")
    assert notice.status == "sent", notice.last_error
    assert len(emails_to("legal@example.com")) == 2


# --- Opt-outs and fallback ------------------------------------------------------------------------

def test_opted_out_email_falls_back_to_sms_but_legal_notices_still_go_by_email(defaults, clock, sms_outbox):
    customer = CustomerFactory(email="o@example.com", phone="+14155550123", opt_out_email=True)
    case, _ = open_case(InvoiceFactory(customer=customer))
    clock.tick()
    assert emails_to("o@example.com") == []
    assert [m["to"] for m in sms_outbox] == ["+14155550123"]
    assert "Reply STOP" in sms_outbox[0]["body"]
    queued = case.events.get(kind="message.queued")
    assert "opted out of email; sent by sms instead" in queued.message

    clock.move_to(T0 + datetime.timedelta(days=10))
    clock.tick()
    final = emails_to("o@example.com")
    assert [m.subject.split(":")[0] for m in final] == ["Final notice"]


def test_a_bounced_address_is_never_used_even_for_legal_notices(defaults, clock, sms_outbox):
    customer = CustomerFactory(email="b@example.com", phone="+393331234567", email_undeliverable=True,
                               locale="it")
    open_case(InvoiceFactory(customer=customer))
    clock.move_to(T0 + datetime.timedelta(days=10))
    clock.tick()
    assert emails_to("b@example.com") == []
    assert len(sms_outbox) == 1 and "ULTIMO AVVISO" in sms_outbox[0]["body"]


def test_sms_stop_is_respected_even_for_legal_notices_and_inapp_is_the_last_resort(defaults, clock, sms_outbox):
    customer = CustomerFactory(email="", phone="+14155550124", opt_out_sms=True)
    case, _ = open_case(InvoiceFactory(customer=customer))
    clock.move_to(T0 + datetime.timedelta(days=10))
    clock.tick()
    assert sms_outbox == []
    inapp = Notification.objects.get(customer=customer, channel="inapp", template_code="final_notice")
    assert inapp.status == "sent" and inapp.subject == "Final notice before suspension"

    customer.opt_out_inapp = True
    customer.save()
    plan = policy.plan_channels(customer, ["email"], "reminder")
    assert plan[0].channel is None and "no other channel" in plan[0].note
    assert case.events.filter(kind="message.queued").exists()


def test_opting_out_after_a_message_was_queued_reroutes_it_at_send_time(defaults, clock, sms_outbox):
    customer = CustomerFactory(email="late@example.com", phone="+14155550125")
    case, _ = open_case(InvoiceFactory(customer=customer))
    from dunning import engine

    engine.run_due_steps()
    customer.opt_out_email = True
    customer.save()
    outbox.send_queued()
    outbox.send_queued()
    assert emails_to("late@example.com") == []
    assert len(sms_outbox) == 1
    assert case.events.filter(kind="message.rerouted").count() == 1
    email_row = Notification.objects.get(customer=customer, channel="email")
    assert email_row.status == "cancelled"
    assert mail.outbox == []


def test_consolidated_messages_on_different_days_each_count_against_the_cap(defaults, clock):
    """With consolidation the three first notices share the first case's reference, yet they are
    three contacts: the reminder that would be the fourth in a week waits."""
    customer = CustomerFactory(email="grouped@example.com")
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:grouped")
    for day in range(3):
        clock.move_to(T0 + datetime.timedelta(days=day))
        open_case(InvoiceFactory(customer=customer))
        clock.tick()
    sent = Notification.objects.filter(customer=customer, status="sent")
    assert sorted(sent.values_list("template_code", flat=True)) == ["first_notice"] * 3
    assert len({n.reference for n in sent}) == 1  # one consolidated cause
    run_hours(clock, T0 + datetime.timedelta(days=5), 2)
    reminder = Notification.objects.filter(customer=customer, template_code="reminder").first()
    assert reminder is not None and reminder.status == "queued" and reminder.send_after > clock.now
    assert CaseEvent.objects.filter(case__customer=customer, kind="message.deferred",
                                    message__contains="contact cap reached").exists()
