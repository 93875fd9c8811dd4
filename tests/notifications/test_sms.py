"""SMS: the Twilio backend on the official SDK against a local server speaking Twilio's wire format,
STOP/START replies with Twilio's request signature, and E.164 numbers."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from django.core.exceptions import ValidationError
from twilio.request_validator import RequestValidator

from customers.models import Customer
from dunning.cases import open_case
from notifications import services as outbox
from notifications.models import Notification
from notifications.sms import base as sms_base
from tests.factories import CustomerFactory, InvoiceFactory
from tests.support.notifications import RecordingServer, sms_outbox_fixture  # noqa: F401

pytestmark = pytest.mark.django_db
SID, TOKEN = "AC" + "0" * 32, "twilio-auth-token"
INBOUND = "/notifications/sms/twilio/inbound/"


def twilio_message(to: str, body: str) -> dict:
    return {
        "account_sid": SID, "api_version": "2010-04-01", "body": body,
        "date_created": "Mon, 02 Mar 2026 10:00:00 +0000",
        "direction": "outbound-api", "error_code": None, "error_message": None, "from": "+15005550006",
        "num_segments": "1", "price": None, "sid": "SM" + "a" * 32, "status": "queued", "to": to,
        "uri": f"/2010-04-01/Accounts/{SID}/Messages/SM{'a' * 32}.json",
    }


@pytest.fixture
def twilio(settings):
    def configure(server: RecordingServer):
        settings.SMS_BACKEND = "notifications.sms.twilio.TwilioSmsBackend"
        settings.TWILIO_ACCOUNT_SID = SID
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.TWILIO_FROM_NUMBER = "+15005550006"
        settings.TWILIO_API_BASE_URL = server.url
        sms_base._cache.clear()

    yield configure
    sms_base._cache.clear()


def queue_sms(customer, code="reminder"):
    row = outbox.build(customer, channel="sms", template_code=code, context={"amount": "49.00", "currency": "USD",
                                                                          "invoice_number": "INV-7"},
                       dedupe_key=f"sms-{customer.pk}-{code}", reference="")
    outbox.queue([row])


def test_twilio_backend_sends_through_the_official_sdk(defaults, clock, twilio):
    customer = CustomerFactory(phone="+14155550123", locale="es")
    with RecordingServer([(201, twilio_message("+14155550123", "x"))]) as server:
        twilio(server)
        queue_sms(customer)
        assert outbox.send_queued() == 1
    [request] = server.requests
    assert request["method"] == "POST"
    assert request["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    form = urllib.parse.parse_qs(request["body"].decode())
    assert form["To"] == ["+14155550123"] and form["From"] == ["+15005550006"]
    assert "INV-7" in form["Body"][0] and "Responda STOP" in form["Body"][0]
    row = Notification.objects.get()
    assert row.status == "sent" and row.provider_message_id == "SM" + "a" * 32


def test_twilio_unsubscribed_number_is_a_permanent_failure_that_opts_the_customer_out(defaults, clock, twilio):
    customer = CustomerFactory(phone="+14155550124")
    error = {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400,
             "more_info": "https://www.twilio.com/docs/errors/21610"}
    with RecordingServer([(400, error)]) as server:
        twilio(server)
        queue_sms(customer)
        assert outbox.send_queued() == 0
    row = Notification.objects.get()
    assert row.status == "failed" and "21610" in row.last_error
    assert Customer.objects.get(pk=customer.pk).opt_out_sms is True


def test_twilio_server_errors_are_retried(defaults, clock, twilio):
    customer = CustomerFactory(phone="+14155550125")
    error = {"code": 20500, "message": "Internal Server Error", "status": 500}
    with RecordingServer([(500, error), (201, twilio_message("+14155550125", "x"))]) as server:
        twilio(server)
        queue_sms(customer)
        assert outbox.send_queued() == 0
        row = Notification.objects.get()
        assert row.status == "queued" and "500" in row.last_error
        clock.advance(minutes=1)
        assert outbox.send_queued() == 1
    assert len(server.requests) == 2


# --- Replies: STOP and START --------------------------------------------------------------------

def reply(client, body: str, from_number: str, *, token: str = TOKEN):
    params = {"MessageSid": "SM" + "b" * 32, "AccountSid": SID, "From": from_number, "To": "+15005550006",
              "Body": body, "NumMedia": "0"}
    signature = RequestValidator(token).compute_signature(f"http://testserver{INBOUND}", params)
    return client.post(INBOUND, params, HTTP_X_TWILIO_SIGNATURE=signature)


@pytest.mark.parametrize("word", ["STOP", "stop", "Quit", "END", "revoke", "opt out", "Cancel", " UNSUBSCRIBE "])
def test_every_stop_word_opts_the_number_out_with_one_confirmation(client, settings, word):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    customer = CustomerFactory(phone="+14155550126", locale="it")
    response = reply(client, word, "+14155550126")
    assert response.status_code == 200 and response["Content-Type"] == "text/xml"
    assert "<Message>" in response.content.decode() and "non riceverà più SMS" in response.content.decode()
    assert Customer.objects.get(pk=customer.pk).opt_out_sms is True
    # Repeating STOP changes nothing and sends no second confirmation.
    again = reply(client, "STOP", "+14155550126")
    assert again.content.decode().endswith("<Response></Response>")


def test_start_opts_back_in_and_later_steps_use_sms_again(client, settings, defaults, clock, sms_outbox):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    customer = CustomerFactory(phone="+14155550127", email="", opt_out_sms=True)
    case, _ = open_case(InvoiceFactory(customer=customer))
    response = reply(client, "START", "+14155550127")
    assert "you will receive text messages from us again" in response.content.decode()
    assert Customer.objects.get(pk=customer.pk).opt_out_sms is False
    assert case.events.filter(kind="customer.preferences", message__contains="sms:START").exists()
    clock.tick()
    assert [m["to"] for m in sms_outbox] == ["+14155550127"]
    assert reply(client, "START", "+14155550127").content.decode().endswith("<Response></Response>")


def test_a_reply_without_a_valid_twilio_signature_is_refused(client, settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    customer = CustomerFactory(phone="+14155550128")
    assert reply(client, "STOP", "+14155550128", token="someone-else").status_code == 403
    assert client.post(INBOUND, {"From": "+14155550128", "Body": "STOP"}).status_code == 403
    assert Customer.objects.get(pk=customer.pk).opt_out_sms is False


def test_other_replies_change_nothing(client, settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    customer = CustomerFactory(phone="+14155550129")
    response = reply(client, "stop sending me the invoice please", "+14155550129")
    assert response.content.decode().endswith("<Response></Response>")
    assert Customer.objects.get(pk=customer.pk).opt_out_sms is False


# --- Numbers ---------------------------------------------------------------------------------------

def test_phone_numbers_are_validated_at_input_and_stored_in_e164():
    customer = CustomerFactory.build(phone="+39 333 123 4567")
    customer.full_clean(exclude=["external_id"])
    customer.save()
    assert Customer.objects.get(pk=customer.pk).phone.as_e164 == "+393331234567"
    bad = CustomerFactory.build(phone="12345")
    with pytest.raises(ValidationError) as info:
        bad.full_clean()
    assert "phone" in info.value.message_dict
