"""REST API v1: every endpoint with and without a key, scopes, idempotency, events, case actions."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from billing.models import Invoice, PaymentAttempt
from dunning.cases import open_case
from dunning.models import CaseEvent, DunningCase
from integrations.models import ApiKey, IdempotencyRecord, InboundEvent
from notifications.models import Channel, Notification
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.imports import api_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(defaults):
    customer = CustomerFactory(external_id="cus_api", currency="EUR")
    method = PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:api")
    invoice = InvoiceFactory(customer=customer, external_id="in_api", currency="EUR", amount_due="120.50")
    case, _ = open_case(invoice, decline_code="insufficient_funds")
    note = Notification.objects.create(customer=customer, channel=Channel.INAPP, recipient="x",
                                       template_code="reminder", dedupe_key="n1", body_text="Please update your card")
    event = InboundEvent.objects.create(event_id="evt_seed", kind=InboundEvent.Kind.PAYMENT_FAILED)
    return {"customer": customer, "method": method, "invoice": invoice, "case": case, "campaign": defaults,
            "note": note, "event": event}


def client_for(secret: str | None) -> APIClient:
    client = APIClient()
    if secret:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def post(client: APIClient, url: str, data: dict | None = None, key: str | None = None):
    return client.post(url, data or {}, format="json", HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex)


def read_urls(w) -> list[str]:
    return [
        "/api/v1/customers/", f"/api/v1/customers/{w['customer'].pk}/",
        "/api/v1/payment-methods/", f"/api/v1/payment-methods/{w['method'].pk}/",
        "/api/v1/invoices/", f"/api/v1/invoices/{w['invoice'].pk}/",
        "/api/v1/payment-events/", f"/api/v1/payment-events/{w['event'].event_id}/",
        "/api/v1/cases/", f"/api/v1/cases/{w['case'].pk}/",
        "/api/v1/campaigns/", f"/api/v1/campaigns/{w['campaign'].pk}/",
        "/api/v1/notifications/", f"/api/v1/notifications/{w['note'].pk}/",
        "/api/v1/reports/summary/",
    ]


def write_calls(w) -> list[tuple[str, dict]]:
    return [
        ("/api/v1/customers/", {"external_id": "cus_new", "name": "New Co", "currency": "USD"}),
        ("/api/v1/invoices/", {"external_id": "in_new", "customer": "cus_api", "currency": "EUR",
                               "amount_due": "10.00", "issued_at": "2026-03-01", "due_date": "2026-03-31"}),
        ("/api/v1/payment-events/", {"id": "evt_w", "type": "payment_failed", "invoice": "in_api"}),
        (f"/api/v1/cases/{w['case'].pk}/pause/", {}),
        (f"/api/v1/notifications/{w['note'].pk}/read/", {}),
    ]


def test_every_endpoint_needs_a_key(world):
    anonymous = client_for(None)
    for url in read_urls(world):
        response = anonymous.get(url)
        assert response.status_code == 401, url
        assert response.json()["error"]["code"] == "not_authenticated"
        assert response["WWW-Authenticate"].startswith("Bearer")
    for url, data in write_calls(world):
        assert post(anonymous, url, data).status_code == 401, url


def test_every_read_endpoint_answers_a_read_key(world):
    _key, secret = api_key(ApiKey.Scope.READ)
    client = client_for(secret)
    for url in read_urls(world):
        response = client.get(url)
        assert response.status_code == 200, (url, response.content)


def test_read_key_cannot_write(world):
    _key, secret = api_key(ApiKey.Scope.READ)
    client = client_for(secret)
    for url, data in write_calls(world):
        response = post(client, url, data)
        assert response.status_code == 403, url
        assert "read-only" in response.json()["error"]["message"]
    world["case"].refresh_from_db()
    assert world["case"].status == DunningCase.Status.ACTIVE


def test_read_write_key_can_write_every_endpoint(world):
    _key, secret = api_key(ApiKey.Scope.READ_WRITE)
    client = client_for(secret)
    expected = [201, 201, 202, 200, 200]
    for (url, data), status in zip(write_calls(world), expected, strict=True):
        response = post(client, url, data)
        assert response.status_code == status, (url, response.content)
    assert Invoice.objects.get(external_id="in_new").customer == world["customer"]
    world["note"].refresh_from_db()
    assert world["note"].read_at is not None


def test_bad_revoked_and_malformed_keys(world):
    key, secret = api_key()
    assert client_for(secret).get("/api/v1/customers/").status_code == 200
    assert client_for(secret[:-2] + "xx").get("/api/v1/customers/").status_code == 401
    assert client_for("not-a-key").get("/api/v1/customers/").status_code == 401
    key.revoke()
    response = client_for(secret).get("/api/v1/customers/")
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_keys_are_stored_hashed(world):
    key, secret = api_key()
    assert secret.startswith(f"dk_{key.prefix}_")
    stored = ApiKey.objects.filter(pk=key.pk).values()[0]
    assert all(secret.split("_", 2)[2] not in str(value) for value in stored.values())


def test_idempotent_replay_and_conflicting_replay(world):
    _key, secret = api_key()
    client = client_for(secret)
    body = {"external_id": "cus_idem", "name": "Idem", "currency": "USD"}
    first = post(client, "/api/v1/customers/", body, key="k-1")
    again = post(client, "/api/v1/customers/", body, key="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    conflict = post(client, "/api/v1/customers/", {**body, "name": "Other"}, key="k-1")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    # Errors are replayed too, and the key is per API key.
    bad = post(client, "/api/v1/customers/", {"name": "no id"}, key="k-2")
    assert bad.status_code == 400
    assert post(client, "/api/v1/customers/", {"name": "no id"}, key="k-2").json() == bad.json()
    _other, other_secret = api_key(name="other")
    assert post(client_for(other_secret), "/api/v1/customers/", {**body, "external_id": "cus_o"},
                key="k-1").status_code == 201


def test_post_without_idempotency_key_is_refused(world):
    _key, secret = api_key()
    response = client_for(secret).post("/api/v1/customers/", {"external_id": "x", "name": "x"}, format="json")
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]


def test_validation_errors_have_field_details(world):
    _key, secret = api_key()
    response = post(client_for(secret), "/api/v1/invoices/", {"external_id": "in_x", "customer": "cus_api",
                                                              "currency": "EUR", "amount_due": "abc"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "validation_error"
    assert set(error["fields"]) >= {"amount_due", "issued_at", "due_date"}


def test_payment_failed_then_succeeded_recovers_the_case_and_event_ids_are_deduplicated(
        world, django_capture_on_commit_callbacks):
    _key, secret = api_key()
    client = client_for(secret)
    invoice = InvoiceFactory(customer=world["customer"], external_id="in_evt", currency="EUR", amount_due="30.00")
    with django_capture_on_commit_callbacks(execute=True):
        failed = post(client, "/api/v1/payment-events/", {"id": "evt_1", "type": "payment_failed",
                                                          "invoice": "in_evt", "decline_code": "expired_card"})
    # Accepted as pending; its commit wakes the worker (synchronous in tests), which applies it.
    assert failed.status_code == 202 and failed.json()["status"] == "pending" and failed.json()["result"] == {}
    applied = client.get("/api/v1/payment-events/evt_1/").json()
    assert applied["status"] == "applied" and applied["result"]["case_created"] is True and applied["applied_at"]
    case = DunningCase.objects.get(invoice=invoice)
    assert case.decline_code == "expired_card" and applied["result"]["case"] == case.pk
    assert case.events.get(kind="case.opened").actor_label == "api:billing system"
    # The same event id under a new Idempotency-Key: applied once, answered with the stored event.
    again = post(client, "/api/v1/payment-events/", {"id": "evt_1", "type": "payment_failed", "invoice": "in_evt",
                                                     "decline_code": "expired_card"})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["result"] == applied["result"]
    assert PaymentAttempt.objects.filter(invoice=invoice).count() == 1
    paid = post(client, "/api/v1/payment-events/", {"id": "evt_2", "type": "payment_succeeded", "invoice": "in_evt"})
    assert paid.status_code == 201 and paid.json()["result"]["invoice_status"] == "paid"
    assert paid.json()["status"] == "applied"
    case.refresh_from_db()
    assert case.status == DunningCase.Status.RECOVERED
    refund = post(client, "/api/v1/payment-events/", {"id": "evt_3", "type": "refunded", "invoice": "in_evt",
                                                      "amount": "10.00"})
    assert refund.status_code == 201
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.OPEN and invoice.amount_paid == Decimal("20.00")
    assert client.get("/api/v1/payment-events/evt_3/").json()["type"] == "refunded"


def test_a_failure_the_worker_cannot_apply_is_rejected_with_its_reason(world, django_capture_on_commit_callbacks):
    _key, secret = api_key()
    client = client_for(secret)
    InvoiceFactory(customer=world["customer"], external_id="in_paid", status=Invoice.Status.PAID,
                   amount_due="10.00", amount_paid="10.00")
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "/api/v1/payment-events/", {"id": "evt_p", "type": "payment_failed",
                                                            "invoice": "in_paid"})
    assert response.status_code == 202
    event = client.get("/api/v1/payment-events/evt_p/").json()
    assert event["status"] == "rejected" and "paid, not open" in event["error"] and event["result"] == {}
    assert not PaymentAttempt.objects.filter(invoice__external_id="in_paid").exists()
    assert client.get("/api/v1/payment-events/?status=rejected").json()["results"][0]["id"] == "evt_p"


def test_payment_method_updated_retries_open_cases(world, django_capture_on_commit_callbacks):
    _key, secret = api_key()
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client_for(secret), "/api/v1/payment-events/", {
        "id": "evt_pm", "type": "payment_method_updated", "customer": "cus_api",
            "payment_method": {"token": "tok_ok:new", "brand": "visa", "last4": "4242", "exp_month": 1,
                               "exp_year": 2031},
        })
    assert response.status_code == 201, response.content
    assert response.json()["result"]["retry_scheduled"] is True
    # The retry ran after the commit (a django-q2 task, synchronous in tests); its outcome is on the event.
    event = client_for(secret).get("/api/v1/payment-events/evt_pm/").json()
    assert event["result"]["retries"][0]["outcome"] == "succeeded"
    world["case"].refresh_from_db()
    assert world["case"].status == DunningCase.Status.RECOVERED
    assert world["customer"].default_payment_method.token == "tok_ok:new"


def test_event_for_unknown_invoice_is_a_field_error_and_is_not_stored(world):
    _key, secret = api_key()
    response = post(client_for(secret), "/api/v1/payment-events/", {"id": "evt_x", "type": "payment_failed",
                                                                     "invoice": "nope"})
    assert response.status_code == 400 and "invoice" in response.json()["error"]["fields"]
    assert not InboundEvent.objects.filter(event_id="evt_x").exists()


def test_case_actions_and_illegal_transitions(world):
    _key, secret = api_key()
    client = client_for(secret)
    url = f"/api/v1/cases/{world['case'].pk}"
    assert post(client, f"{url}/resume/").status_code == 409
    paused = post(client, f"{url}/pause/", {"reason": "customer called"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    again = post(client, f"{url}/pause/")
    assert again.status_code == 409
    assert again.json()["error"] == {"status": 409, "code": "invalid_transition",
                                     "message": f"Case #{world['case'].pk} is paused; only active cases can be paused",
                                     "fields": {}}
    assert post(client, f"{url}/resume/").json()["status"] == "active"
    retried = post(client, f"{url}/retry-now/")
    assert retried.status_code == 200 and retried.json()["attempts"][-1]["outcome"] == "failed"
    cancelled = post(client, f"{url}/cancel/")
    assert cancelled.json()["status"] == "cancelled"
    assert post(client, f"{url}/cancel/").status_code == 409
    kinds = list(CaseEvent.objects.filter(case=world["case"]).values_list("kind", flat=True))
    assert {"case.paused", "case.resumed", "case.cancelled", "payment.retry_requested"} <= set(kinds)
    detail = client.get(f"{url}/").json()
    assert [e["kind"] for e in detail["timeline"]][0] == "case.opened"


def test_representation_money_and_timestamps(world):
    _key, secret = api_key()
    body = client_for(secret).get(f"/api/v1/invoices/{world['invoice'].pk}/").json()
    assert body["amount_due"] == "120.50" and body["currency"] == "EUR" and body["customer"] == "cus_api"
    assert body["created_at"].endswith("Z")
    case = client_for(secret).get(f"/api/v1/cases/{world['case'].pk}/").json()
    assert case["amount_remaining"] == "120.50" and case["failed_at"].endswith("Z")


def test_lists_filter_order_and_paginate_with_cursors(world):
    _key, secret = api_key()
    client = client_for(secret)
    for n in range(5):
        InvoiceFactory(customer=world["customer"], external_id=f"in_page_{n}", currency="EUR")
    page = client.get("/api/v1/invoices/?page_size=2&ordering=id").json()
    assert len(page["results"]) == 2 and page["next"] and page["previous"] is None
    seen = [r["external_id"] for r in page["results"]]
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += [r["external_id"] for r in page["results"]]
    assert len(seen) == 6 and len(set(seen)) == 6
    only = client.get("/api/v1/invoices/?external_id=in_page_3").json()["results"]
    assert [r["external_id"] for r in only] == ["in_page_3"]
    assert client.get("/api/v1/cases/?status=recovered").json()["results"] == []
    unread = client.get("/api/v1/notifications/?unread=true").json()["results"]
    assert [n["id"] for n in unread] == [world["note"].pk]


def test_report_summary(world):
    _key, secret = api_key()
    body = client_for(secret).get("/api/v1/reports/summary/").json()
    assert body["open_cases"] == 1 and body["open_amount"] == {"EUR": "120.50"}
    assert body["cases_by_status"]["active"] == 1 and body["recovery_rate"] == 0.0


def test_throttling_per_key(world, settings):
    settings.API_THROTTLE_RATE = "3/min"
    from django.core.cache import cache

    cache.clear()
    _key, secret = api_key()
    client = client_for(secret)
    import time_machine

    with time_machine.travel(datetime.datetime(2026, 3, 2, 10, 0, 15, tzinfo=datetime.UTC), tick=False) as t:
        responses = [client.get("/api/v1/customers/") for _ in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert int(responses[-1]["Retry-After"]) == 45  # the rest of the minute
        _other, other_secret = api_key(name="other")
        assert client_for(other_secret).get("/api/v1/customers/").status_code == 200
        t.move_to(datetime.datetime(2026, 3, 2, 10, 1, 0, tzinfo=datetime.UTC))
        assert client.get("/api/v1/customers/").status_code == 200  # a new window
    cache.clear()


@pytest.mark.parametrize("secret", [None, "dk_nope_wrongsecret", "not-a-key", "dk_a_b extra"])
def test_requests_without_a_valid_key_are_throttled_per_address(world, settings, secret):
    settings.API_THROTTLE_RATE = "3/min"
    from django.core.cache import cache

    cache.clear()
    import time_machine

    with time_machine.travel(datetime.datetime(2026, 3, 2, 10, 0, 15, tzinfo=datetime.UTC), tick=False) as t:
        client = APIClient(REMOTE_ADDR="203.0.113.7")
        if secret:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        # X-Forwarded-For is written by the client: a new value each time must not give a new allowance.
        codes = [client.get("/api/v1/customers/", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code
                 for i in range(3)]
        assert codes == [401, 401, 401]
        event = {"type": "payment_failed", "id": "evt_x", "invoice": "in_api"}
        limited = post(client, "/api/v1/payment-events/", event)
        assert limited.status_code == 429 and limited["Retry-After"] == "45"
        assert limited.json()["error"]["code"] == "throttled"
        # Another address is not affected, nor is a valid key from the same one (counted per key).
        assert APIClient(REMOTE_ADDR="203.0.113.8").get("/api/v1/customers/").status_code == 401
        _key, good = api_key()
        valid = APIClient(REMOTE_ADDR="203.0.113.7")
        valid.credentials(HTTP_AUTHORIZATION=f"Bearer {good}")
        assert valid.get("/api/v1/customers/").status_code == 200
        t.move_to(datetime.datetime(2026, 3, 2, 10, 1, 0, tzinfo=datetime.UTC))
        assert client.get("/api/v1/customers/").status_code == 401  # a new window
    cache.clear()


def test_x_forwarded_for_counts_only_with_trusted_proxies(world, settings):
    settings.API_THROTTLE_RATE = "2/min"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    from django.core.cache import cache

    cache.clear()
    proxy = APIClient(REMOTE_ADDR="10.0.0.2")  # one proxy that appends the address it saw
    codes = [proxy.get("/api/v1/customers/", HTTP_X_FORWARDED_FOR=f"spoofed, 198.51.100.{n}").status_code
             for n in (1, 1, 1, 2)]
    assert codes == [401, 401, 429, 401]  # per client behind the proxy, whatever the client prepended
    cache.clear()


def test_admin_creates_a_key_shown_once_and_revokes_it(admin_client, db):
    response = admin_client.post("/admin/integrations/apikey/add/", {"name": "ERP", "scope": "read"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get(name="ERP")
    secret = response.context["secret"]
    assert secret in response.content.decode()
    assert client_for(secret).get("/api/v1/customers/").status_code == 200
    assert secret not in admin_client.get(f"/admin/integrations/apikey/{key.pk}/change/").content.decode()
    admin_client.post("/admin/integrations/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert client_for(secret).get("/api/v1/customers/").status_code == 401


def test_schema_and_docs_are_served_locally(client, db):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/v1/payment-events/" in schema.content
    docs = client.get("/api/docs/")
    page = docs.content.decode()
    assert docs.status_code == 200 and "cdn" not in page and "/static/drf_spectacular_sidecar/" in page
    assert "<script>" not in page  # no inline script: the CSP only allows 'self'


def test_idempotency_records_are_kept_per_key(world):
    key, secret = api_key()
    post(client_for(secret), "/api/v1/customers/", {"external_id": "c9", "name": "n"}, key="abc")
    record = IdempotencyRecord.objects.get(key="abc")
    assert record.api_key == key and record.status_code == 201


def test_expired_idempotency_records_are_purged_and_the_schedule_exists(world, clock):
    from django_q.models import Schedule

    from integrations.tasks import purge_idempotency_records

    _key, secret = api_key()
    post(client_for(secret), "/api/v1/customers/", {"external_id": "c_old", "name": "n"}, key="old")
    clock.advance(hours=25)
    post(client_for(secret), "/api/v1/customers/", {"external_id": "c_new", "name": "n"}, key="new")
    assert purge_idempotency_records() == 1 and purge_idempotency_records() == 0
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    assert Schedule.objects.filter(func="integrations.tasks.purge_idempotency_records").exists()


@pytest.mark.parametrize("offset", ["-22:51", "+19:54", "+00:00", "Z"])
def test_datetime_filters_accept_any_iso_offset_without_a_server_error(world, offset):
    # PostgreSQL refuses offsets beyond +-15:59; the API normalises to UTC first (found by schemathesis).
    _key, secret = api_key(ApiKey.Scope.READ)
    response = client_for(secret).get(f"/api/v1/cases/?failed_at__gte=2020-05-26T12:14:59{offset}".replace("+", "%2B"))
    assert response.status_code == 200, response.content
    assert [c["id"] for c in response.json()["results"]] == [world["case"].pk]


def test_a_datetime_filter_out_of_range_is_a_400(world):
    _key, secret = api_key(ApiKey.Scope.READ)
    response = client_for(secret).get("/api/v1/cases/?failed_at__gte=0001-01-01T00:00:00%2B15:00")
    assert response.status_code == 400


def test_customer_export_through_the_api(world):
    _key, secret = api_key(ApiKey.Scope.READ)
    response = client_for(secret).get(f"/api/v1/customers/{world['customer'].pk}/export/")
    assert response.status_code == 200, response.content
    body = response.json()
    text = str(body)
    assert "in_api" in text and "Please update your card" in text  # invoices and messages are there
    assert "tok_insufficient_funds" not in text  # never a payment-method token
    assert client_for(None).get(f"/api/v1/customers/{world['customer'].pk}/export/").status_code == 401
    assert client_for(secret).get("/api/v1/customers/999999/export/").status_code == 404


def test_an_id_beyond_the_column_range_is_a_client_error(world):
    """Found by schemathesis on SQLite: a 23-digit campaign filter reached the database as an int."""
    _key, secret = api_key()
    response = client_for(secret).get("/api/v1/cases/?campaign=99999999999999999999999")
    assert response.status_code == 400 and "campaign" in response.json()["error"]["fields"]


def test_an_error_echoing_a_nul_character_is_stored_and_replayed(world):
    """Found by schemathesis on PostgreSQL: jsonb refuses U+0000, which the time zone error echoed."""
    _key, secret = api_key()
    client = client_for(secret)
    body = {"external_id": "cus_nul", "name": "Nul", "timezone": "Europe/\x00Rome"}
    first = post(client, "/api/v1/customers/", body, key="nul-1")
    assert first.status_code == 400 and "timezone" in first.json()["error"]["fields"]
    again = post(client, "/api/v1/customers/", body, key="nul-1")
    assert again.status_code == 400 and again["Idempotent-Replayed"] == "true"
    assert again.json()["error"]["fields"].keys() == first.json()["error"]["fields"].keys()


def test_a_bad_payment_method_in_an_event_names_the_nested_fields(world):
    _key, secret = api_key()
    response = post(client_for(secret), "/api/v1/payment-events/", {
        "id": "evt_pm_bad", "type": "payment_method_updated", "customer": "cus_api",
        "payment_method": {"last4": "12", "exp_month": 13}})
    assert response.status_code == 400
    [message] = response.json()["error"]["fields"]["payment_method"]
    assert all(f"{name}: " in message for name in ("token", "last4", "exp_month")), message
    assert not InboundEvent.objects.filter(event_id="evt_pm_bad").exists()


def test_the_hand_built_event_body_matches_the_declared_fields(world):
    from rest_framework import serializers as drf

    from integrations.api.serializers import PaymentEventSerializer

    event = world["event"]
    fast = PaymentEventSerializer(event, context={"duplicate": True}).data
    # What DRF's own field-by-field rendering of the same declared fields gives.
    reference = drf.Serializer.to_representation(PaymentEventSerializer(event, context={"duplicate": True}), event)
    assert fast == reference and list(fast) == list(PaymentEventSerializer().fields)
