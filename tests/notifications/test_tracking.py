"""Email tracking: Postmark's own webhook payloads posted to anymail's tracking URL."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from customers.models import Customer
from dunning.cases import open_case
from dunning.models import WorkItem
from notifications.models import Notification
from tests.factories import CustomerFactory, InvoiceFactory
from tests.support.clock import T0
from tests.support.notifications import emails_to, sms_outbox_fixture  # noqa: F401

pytestmark = pytest.mark.django_db
URL = "/anymail/postmark/tracking/"
MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"


@pytest.fixture
def webhook_secret(settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": "anymail:s3cret-hook"}
    return "Basic " + base64.b64encode(b"anymail:s3cret-hook").decode()


@pytest.fixture
def sent_email(defaults, clock):
    customer = CustomerFactory(email="john@example.com", phone="+14155550199")
    case, _ = open_case(InvoiceFactory(customer=customer))
    clock.tick()
    row = Notification.objects.get(customer=customer, template_code="first_notice")
    assert row.status == "sent"
    # What the Postmark backend would have stored from its API answer.
    Notification.objects.filter(pk=row.pk).update(provider_message_id=MESSAGE_ID)
    row.refresh_from_db()
    return row, case


def post(client, auth, payload):
    return client.post(URL, data=json.dumps(payload), content_type="application/json", HTTP_AUTHORIZATION=auth)


def test_the_webhook_refuses_posts_without_the_secret(client, webhook_secret, sent_email):
    response = client.post(URL, data=json.dumps({"RecordType": "Delivery"}), content_type="application/json")
    assert response.status_code in (400, 401, 403)
    bad = "Basic " + base64.b64encode(b"anymail:wrong").decode()
    assert post(client, bad, {"RecordType": "Delivery", "MessageID": MESSAGE_ID}).status_code in (400, 401, 403)
    sent_email[0].refresh_from_db()
    assert sent_email[0].delivered_at is None


def test_delivered_opened_clicked_update_the_message_and_the_timeline(client, webhook_secret, sent_email):
    row, case = sent_email
    delivery = {
        "RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound", "MessageID": MESSAGE_ID,
        "Recipient": "john@example.com", "Tag": "first_notice", "DeliveredAt": "2026-03-02T10:00:05.9070259Z",
        "Details": "Test delivery webhook details", "Metadata": {"notification_id": str(row.pk)},
    }
    opened = {
        "RecordType": "Open", "MessageStream": "outbound", "FirstOpen": True,
        "Client": {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"},
        "OS": {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X 10"},
        "Platform": "WebMail", "UserAgent": "Mozilla/5.0", "ReadSeconds": 5,
        "Geo": {"CountryISOCode": "US", "Country": "United States"},
        "MessageID": MESSAGE_ID, "Metadata": {}, "ReceivedAt": "2026-03-02T11:00:00.0000000Z",
        "Tag": "first_notice", "Recipient": "john@example.com",
    }
    clicked = {
        "RecordType": "Click", "MessageStream": "outbound", "ClickLocation": "HTML",
        "Client": {"Name": "Chrome", "Company": "Google", "Family": "Chrome"}, "OS": {"Name": "OS X"},
        "Platform": "Desktop", "UserAgent": "Mozilla/5.0", "OriginalLink": "https://billing.example.com/portal/t/x/",
        "Geo": {}, "MessageID": MESSAGE_ID, "Metadata": {"notification_id": str(row.pk)},
        "ReceivedAt": "2026-03-02T11:01:00.0000000Z", "Tag": "first_notice", "Recipient": "john@example.com",
    }
    for payload in (delivery, opened, clicked, opened):  # a second open is not news
        assert post(client, webhook_secret, payload).status_code == 200
    row.refresh_from_db()
    assert row.delivered_at == datetime.datetime(2026, 3, 2, 10, 0, 5, 907025, tzinfo=datetime.UTC)
    assert row.opened_at == datetime.datetime(2026, 3, 2, 11, 0, tzinfo=datetime.UTC)
    assert row.clicked_at is not None and row.tracking_status == "clicked"
    kinds = list(case.events.filter(kind__in=["message.delivered", "message.opened", "message.clicked"])
                 .values_list("kind", flat=True))
    assert kinds == ["message.delivered", "message.opened", "message.clicked"]


def test_a_hard_bounce_marks_the_address_unusable_and_the_next_step_uses_sms(
    client, webhook_secret, sent_email, clock, sms_outbox
):
    row, case = sent_email
    bounce = {
        "RecordType": "Bounce", "MessageStream": "outbound", "ID": 4323372036854775807, "Type": "HardBounce",
        "TypeCode": 1, "Name": "Hard bounce", "Tag": "first_notice", "MessageID": MESSAGE_ID,
        "Metadata": {"notification_id": str(row.pk)}, "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "john@example.com", "From": "billing@example.com", "BouncedAt": "2026-03-02T10:00:09Z",
        "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "We couldn't process",
    }
    assert post(client, webhook_secret, bounce).status_code == 200
    assert post(client, webhook_secret, bounce).status_code == 200  # ESPs retry: recorded once
    row.refresh_from_db()
    customer = Customer.objects.get(pk=row.customer_id)
    assert row.tracking_status == "bounced" and row.bounced_at is not None
    assert customer.email_undeliverable is True
    assert case.events.filter(kind="message.bounced").count() == 1
    assert WorkItem.objects.filter(customer=customer, kind="bounced").count() == 1

    # Day 5: the reminder goes by SMS, not to the dead address.
    clock.move_to(T0 + datetime.timedelta(days=5))
    clock.tick()
    assert len(emails_to("john@example.com")) == 1
    assert [m["to"] for m in sms_outbox] == ["+14155550199"]
    assert "the email address bounced" in case.events.filter(kind="message.queued").last().message


def test_a_soft_bounce_is_not_a_reason_to_give_up_on_the_address(client, webhook_secret, sent_email):
    row, _case = sent_email
    soft = {"RecordType": "Bounce", "Type": "SoftBounce", "TypeCode": 4096, "MessageID": MESSAGE_ID,
            "Metadata": {"notification_id": str(row.pk)}, "Email": "john@example.com",
            "BouncedAt": "2026-03-02T10:00:09Z", "Description": "Mailbox full", "Details": "", "Inactive": False}
    assert post(client, webhook_secret, soft).status_code == 200
    assert Customer.objects.get(pk=row.customer_id).email_undeliverable is False


def test_a_spam_complaint_opts_the_customer_out_of_email(client, webhook_secret, sent_email):
    row, case = sent_email
    complaint = {
        "RecordType": "SpamComplaint", "MessageStream": "outbound", "ID": 42, "Type": "SpamComplaint",
        "TypeCode": 512, "Name": "Spam complaint", "Tag": "first_notice", "MessageID": MESSAGE_ID, "Metadata": {},
        "ServerID": 1234, "Description": "", "Details": "Test spam complaint details", "Email": "john@example.com",
        "From": "billing@example.com", "BouncedAt": "2026-03-02T12:00:00Z", "DumpAvailable": True,
        "Inactive": True, "CanActivate": False, "Subject": "Test subject",
    }
    assert post(client, webhook_secret, complaint).status_code == 200
    customer = Customer.objects.get(pk=row.customer_id)
    assert customer.email_undeliverable and customer.opt_out_email
    assert case.events.filter(kind="message.complained").count() == 1
    assert case.events.filter(kind="customer.preferences").count() == 2


def test_a_mailgun_permanent_failure_with_its_signature(client, settings, sent_email):
    """The same rule through a second ESP's format (Mailgun webhooks are signed, not basic-auth only)."""
    import hashlib
    import hmac

    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_WEBHOOK_SIGNING_KEY": "key-mailgun-signing"}
    row, case = sent_email
    timestamp, token = "1772445609", "c2f4f5a8e2b54ad1b8d4b7e0f1a2b3c4d5e6f7a8b9c0d1e2f3"
    signature = hmac.new(b"key-mailgun-signing", f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    payload = {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": {
            "event": "failed", "severity": "permanent", "reason": "bounce", "id": "G9Bn5sl1TC6nu79C8C0bwg",
            "timestamp": 1772445609.0, "recipient": "john@example.com", "recipient-domain": "example.com",
            "log-level": "error", "tags": ["first_notice"], "user-variables": {"notification_id": str(row.pk)},
            "message": {"headers": {"to": "john@example.com", "message-id": "20260302100000.1.ABC@mg.example.com",
                                    "from": "billing@example.com", "subject": "We couldn't process"},
                        "attachments": [], "size": 4111},
            "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist.",
                                "description": "", "attempt-no": 1, "session-seconds": 0.2},
            "envelope": {"transport": "smtp", "sender": "bounce@mg.example.com", "targets": "john@example.com"},
        },
    }
    url = "/anymail/mailgun/tracking/"
    forged = {**payload, "signature": {**payload["signature"], "signature": "0" * 64}}
    assert client.post(url, data=json.dumps(forged), content_type="application/json").status_code == 400
    assert Customer.objects.get(pk=row.customer_id).email_undeliverable is False
    response = client.post(url, data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 200
    assert Customer.objects.get(pk=row.customer_id).email_undeliverable is True
    assert "does not exist" in case.events.get(kind="message.bounced").message


def _sendgrid_bounce(row, kind):
    return [{
        "email": "john@example.com", "timestamp": 1772445609, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": "bounce", "category": ["first_notice"], "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "notification_id": str(row.pk),
        "reason": "550 5.7.1 Service unavailable; client host blocked using Spamhaus" if kind == "blocked"
        else "550 5.1.1 The email account that you tried to reach does not exist.",
        "status": "5.7.1" if kind == "blocked" else "5.1.1", "type": kind,
    }]


@pytest.mark.parametrize("kind, undeliverable", [("blocked", False), ("bounce", True)])
def test_a_sendgrid_blocked_bounce_is_temporary_and_a_real_bounce_is_not(
        client, webhook_secret, sent_email, kind, undeliverable):
    row, _case = sent_email
    response = client.post("/anymail/sendgrid/tracking/", data=json.dumps(_sendgrid_bounce(row, kind)),
                           content_type="application/json", HTTP_AUTHORIZATION=webhook_secret)
    assert response.status_code == 200
    assert Customer.objects.get(pk=row.customer_id).email_undeliverable is undeliverable
