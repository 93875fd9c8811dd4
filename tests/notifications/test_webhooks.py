"""Outbound webhooks: events from the dunning loop, signed, delivered, retried, logged."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import time

import pytest
from django.contrib.auth import get_user_model

from dunning import engine
from dunning.cases import open_case
from dunning.payments import record_payment
from notifications import webhooks
from notifications.models import WebhookDelivery, WebhookEndpoint
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.clock import T0
from tests.support.notifications import RecordingServer, run_hours

pytestmark = pytest.mark.django_db


def verify(secret: str, header: str, body: bytes, now: float, tolerance: int = 300) -> dict:
    """What a merchant writes from docs/webhooks.md: an independent check of the signature."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    if abs(now - timestamp) > tolerance:
        raise ValueError("timestamp outside the tolerance")
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["v1"]):
        raise ValueError("bad signature")
    return json.loads(body)


def test_the_dunning_loop_emits_every_event_and_the_merchant_can_verify_each(defaults, clock):
    with RecordingServer() as server:
        endpoint = WebhookEndpoint.objects.create(url=server.url + "/hooks/dunning")
        never = CustomerFactory()
        PaymentMethodFactory(customer=never, token="tok_insufficient_funds:n")
        payer = CustomerFactory()
        PaymentMethodFactory(customer=payer, token="tok_insufficient_funds:p")
        never_case, _ = open_case(InvoiceFactory(customer=never))
        payer_invoice = InvoiceFactory(customer=payer)
        payer_case, _ = open_case(payer_invoice)
        run_hours(clock, T0, 15 * 24, step=6)
        # The payer pays after suspension (outside the gateway): recovered and reinstated.
        record_payment(payer_invoice, payer_invoice.amount_remaining)
        run_hours(clock, T0 + datetime.timedelta(days=15), 14 * 24, step=6)
        clock.move_to(T0 + datetime.timedelta(days=30))
        delivered = webhooks.deliver_due()

    assert delivered == WebhookDelivery.objects.count() == len(server.requests)
    events = []
    for request in server.requests:
        assert request["path"] == "/hooks/dunning"
        headers = request["headers"]
        event = verify(endpoint.secret, headers["Dunning-Signature"], request["body"], now=time.time())
        assert headers["Dunning-Event"] == event["type"] and headers["Dunning-Event-Id"] == event["id"]
        events.append(event)
    by_case = {}
    for event in events:
        case_id = event["data"].get("case", {}).get("id") or event["data"].get("case_id")
        by_case.setdefault(case_id, []).append(event["type"])
    assert by_case[never_case.pk][0] == "case.opened"
    assert by_case[never_case.pk].count("case.step_completed") == 7
    assert "customer.suspended" in by_case[never_case.pk]
    assert by_case[never_case.pk][-1] == "case.exhausted"
    assert "payment.recovered" in by_case[payer_case.pk]
    reinstated = [e for e in events if e["type"] == "customer.reinstated"]
    assert [e["data"]["customer"]["external_id"] for e in reinstated] == [payer.external_id]
    recovered = next(e for e in events if e["type"] == "payment.recovered")
    assert recovered["data"]["invoice"]["number"] == payer_invoice.number
    assert recovered["data"]["amount"] == "49.00"
    # Ids are stable and unique: a receiver can deduplicate on them.
    assert len({e["id"] for e in events}) == len(events)


def test_a_tampered_body_or_an_old_timestamp_fails_verification():
    endpoint = WebhookEndpoint(url="https://merchant.example/hooks", secret="whsec_test")
    body = b'{"id":"case:1:opened","type":"case.opened"}'
    header = webhooks.signature_header(endpoint.secret, body)
    assert verify(endpoint.secret, header, body, now=time.time())["type"] == "case.opened"
    with pytest.raises(ValueError, match="bad signature"):
        verify(endpoint.secret, header, body.replace(b"opened", b"closed"), now=time.time())
    with pytest.raises(ValueError, match="bad signature"):
        verify("whsec_other", header, body, now=time.time())
    old = webhooks.signature_header(endpoint.secret, body, timestamp=int(time.time()) - 3600)
    with pytest.raises(ValueError, match="tolerance"):
        verify(endpoint.secret, old, body, now=time.time())


def test_failures_retry_with_exponential_backoff_and_are_logged(clock, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 4
    with RecordingServer([(500, {"error": "boom"}), (503, b"busy"), (200, {"ok": True})]) as server:
        WebhookEndpoint.objects.create(url=server.url)
        webhooks.emit("case.opened", {"case": {"id": 1}}, "case:1:opened")
        assert webhooks.deliver_due() == 0
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == "pending" and delivery.response_status == 500 and delivery.attempts == 1
        assert delivery.next_attempt_at == T0 + datetime.timedelta(minutes=1)
        clock.advance(minutes=1)
        assert webhooks.deliver_due() == 0
        delivery.refresh_from_db()
        assert delivery.next_attempt_at == T0 + datetime.timedelta(minutes=3)
        assert delivery.response_body == "busy"
        clock.advance(minutes=1)
        assert webhooks.deliver_due() == 0  # not due yet
        clock.advance(minutes=1)
        assert webhooks.deliver_due() == 1
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 3 and delivery.last_error == ""
    # The three attempts carried the same event id (the receiver deduplicates).
    assert len({r["headers"]["Dunning-Event-Id"] for r in server.requests}) == 1


def test_an_endpoint_that_never_answers_is_marked_failed_after_the_last_attempt(clock, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/unreachable")
    webhooks.emit("case.exhausted", {"case": {"id": 2}}, "case:2:exhausted")
    for _ in range(3):
        webhooks.deliver_due()
        clock.advance(hours=1)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.attempts == 3
    assert delivery.last_error and delivery.response_status is None


def test_events_are_written_once_per_key_and_only_for_interested_endpoints(django_assert_num_queries):
    everything = WebhookEndpoint.objects.create(url="https://a.example/hooks")
    payments = WebhookEndpoint.objects.create(url="https://b.example/hooks", events=["payment.recovered"])
    WebhookEndpoint.objects.create(url="https://c.example/hooks", active=False)
    batch = [("case.opened", {"n": i}, f"case:{i}:opened") for i in range(3)]
    batch.append(("payment.recovered", {"n": 9}, "case:9:recovered"))
    with django_assert_num_queries(2):  # one for the endpoints, one insert
        webhooks.emit_many(batch)
    webhooks.emit_many(batch)
    assert WebhookDelivery.objects.filter(endpoint=everything).count() == 4
    assert list(WebhookDelivery.objects.filter(endpoint=payments).values_list("event_type", flat=True)) == [
        "payment.recovered"
    ]


def test_running_the_engine_twice_emits_nothing_new(defaults, clock):
    WebhookEndpoint.objects.create(url="https://merchant.example/hooks")
    for _ in range(3):
        open_case(InvoiceFactory())
    engine.run_due_steps()
    count = WebhookDelivery.objects.count()
    assert count == 6  # 3 opened + 3 first steps
    engine.run_due_steps()
    assert WebhookDelivery.objects.count() == count


def test_staff_send_a_test_event_from_the_admin(client):
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    with RecordingServer() as server:
        endpoint = WebhookEndpoint.objects.create(url=server.url)
        response = client.post("/admin/notifications/webhookendpoint/",
                               {"action": "send_test_event", "_selected_action": [endpoint.pk]}, follow=True)
    assert "Delivered (HTTP 200)" in response.content.decode()
    [request] = server.requests
    event = verify(endpoint.secret, request["headers"]["Dunning-Signature"], request["body"], now=time.time())
    assert event["type"] == "webhook.test"
