"""POST /api/v1/payment-events/ with a plain payment_failed, the API's busiest request: one
implementation, REST framework's view (integrations.api.views.PaymentEventViewSet). Its answer and
rows, keys and scopes, throttling, a dead connection, negotiation and refused bodies."""

from __future__ import annotations

import datetime
import json
import uuid

import psycopg
import pytest
import time_machine
from django.core.cache import cache
from django.db import close_old_connections, connection
from rest_framework.test import APIClient

from integrations.models import ApiKey, IdempotencyRecord, InboundEvent
from tests.factories import InvoiceFactory

T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
URL = "/api/v1/payment-events/"


def client_for(scope=ApiKey.Scope.READ_WRITE) -> tuple[APIClient, ApiKey]:
    key, secret = ApiKey.issue("billing system", scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client, key


def send(client, body, key=None, **extra):
    return client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex, **extra)


# --- A plain event ---------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_plain_event_is_answered_202_and_stored_with_its_finished_idempotency_record(defaults):
    client, key = client_for()
    invoice = InvoiceFactory()
    body = {"id": "evt_same", "type": "payment_failed", "invoice": invoice.external_id,
            "decline_code": "expired_card", "message": "Carte expirée", "reference": "ch_9"}
    with time_machine.travel(T0, tick=False):
        response = send(client, body, key="same-key")
    event = InboundEvent.objects.get(event_id="evt_same")
    record = IdempotencyRecord.objects.get(key="same-key")
    assert response.status_code == 202
    assert response.json()["received_at"] == "2026-03-02T09:00:00Z"
    assert response["Allow"] == "GET, POST, HEAD, OPTIONS"
    assert (event.source, event.kind, event.api_key_id, event.invoice_id) == ("api", "payment_failed", key.pk,
                                                                              invoice.pk)
    assert event.payload == {k: v for k, v in body.items() if k not in ("id", "type")}
    assert record.status_code == 202 and record.response_body == response.json()


@pytest.mark.django_db
def test_values_the_serializer_normalises_are_taken_as_it_reads_them(defaults):
    client, _key = client_for()
    invoice = InvoiceFactory()
    assert send(client, {"id": "p1", "type": "payment_failed", "invoice": invoice.external_id}).status_code == 202
    assert send(client, {"id": "p2", "type": "payment_failed", "invoice": invoice.external_id,
                         "amount": "5.00"}).status_code == 202
    assert send(client, {"id": "p3", "type": "payment_failed", "invoice": f" {invoice.external_id}"}).status_code == 202
    assert InboundEvent.objects.get(event_id="p3").payload == {"invoice": invoice.external_id}


# --- Keys, scopes, throttling ---------------------------------------------------------------------

@pytest.mark.django_db
def test_a_revoked_or_downgraded_key_is_refused_at_once(defaults):
    client, key = client_for()
    invoice = InvoiceFactory()
    plain = {"type": "payment_failed", "invoice": invoice.external_id}
    assert send(client, {**plain, "id": "k1"}).status_code == 202
    ApiKey.objects.filter(pk=key.pk).update(scope=ApiKey.Scope.READ)
    downgraded = send(client, {**plain, "id": "k2"})
    assert downgraded.status_code == 403
    ApiKey.objects.filter(pk=key.pk).update(scope=ApiKey.Scope.READ_WRITE)
    assert send(client, {**plain, "id": "k3"}).status_code == 202  # upgraded again: taken again
    key.refresh_from_db()
    key.revoke()
    revoked = send(client, {**plain, "id": "k4"})
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "authentication_failed"
    assert sorted(InboundEvent.objects.values_list("event_id", flat=True)) == ["k1", "k3"]


@pytest.mark.django_db
def test_a_wrong_secret_with_a_known_prefix_is_refused(defaults):
    client, key = client_for()
    invoice = InvoiceFactory()
    assert send(client, {"id": "s1", "type": "payment_failed", "invoice": invoice.external_id}).status_code == 202
    client.credentials(HTTP_AUTHORIZATION=f"Bearer dk_{key.prefix}_not-the-secret")
    assert send(client, {"id": "s2", "type": "payment_failed", "invoice": invoice.external_id}).status_code == 401
    assert not InboundEvent.objects.filter(event_id="s2").exists()


@pytest.mark.django_db
def test_each_request_is_throttled_once_not_twice(defaults, settings):
    settings.API_THROTTLE_RATE = "3/min"
    cache.clear()
    client, _key = client_for()
    invoice = InvoiceFactory()
    plain = {"type": "payment_failed", "invoice": invoice.external_id}
    with time_machine.travel(T0, tick=False):
        assert send(client, {**plain, "id": "t1"}).status_code == 202
        assert send(client, {**plain, "id": "t2"}).status_code == 202
        repeat = send(client, {**plain, "id": "t1"})  # a repeated event counts as a request, once
        assert repeat.status_code == 200 and repeat.json()["duplicate"] is True
        limited = send(client, {**plain, "id": "t3"})
        assert limited.status_code == 429 and limited["Retry-After"] == "60"
    assert not InboundEvent.objects.filter(event_id="t3").exists()


# --- A connection that died between requests ------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_between_requests_is_replaced_and_the_event_stored_once(defaults):
    client, _key = client_for()
    invoice = InvoiceFactory()
    plain = {"type": "payment_failed", "invoice": invoice.external_id}
    assert send(client, {**plain, "id": "c1"}).status_code == 202
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    # What a server's every request starts with (the test client leaves it out): the connection is
    # checked again before its first query, and replaced when it died.
    close_old_connections()
    response = send(client, {**plain, "id": "c2"}, key="after-the-break")
    assert response.status_code == 202
    assert connection.connection.info.backend_pid != pid
    assert InboundEvent.objects.filter(event_id="c2").count() == 1
    assert IdempotencyRecord.objects.get(key="after-the-break").status_code == 202


@pytest.mark.django_db
def test_a_read_only_key_made_read_write_can_write_at_once(defaults):
    client, key = client_for(ApiKey.Scope.READ)
    invoice = InvoiceFactory()
    plain = {"type": "payment_failed", "invoice": invoice.external_id}
    assert send(client, {**plain, "id": "u1"}).status_code == 403
    ApiKey.objects.filter(pk=key.pk).update(scope=ApiKey.Scope.READ_WRITE)
    assert send(client, {**plain, "id": "u2"}).status_code == 202


@pytest.mark.django_db
def test_a_body_over_the_upload_limit_is_refused(defaults, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    client, _key = client_for()
    invoice = InvoiceFactory()
    body = {"id": "big", "type": "payment_failed", "invoice": invoice.external_id, "message": "m" * 200}
    answer = send(client, body, key="big-1")
    assert (send(client, body, key="big-2").status_code, answer.status_code) == (400, 400)
    assert not InboundEvent.objects.exists()


@pytest.mark.django_db
def test_when_the_key_was_last_used_is_recorded_once_a_minute(defaults, django_capture_on_commit_callbacks):
    client, key = client_for()
    invoice = InvoiceFactory()
    plain = {"type": "payment_failed", "invoice": invoice.external_id}
    with time_machine.travel(T0, tick=False):
        with django_capture_on_commit_callbacks(execute=True) as first:
            assert send(client, {**plain, "id": "l1"}).status_code == 202
        key.refresh_from_db()
        assert key.last_used_at == T0
        with django_capture_on_commit_callbacks(execute=True) as second:
            assert send(client, {**plain, "id": "l2"}).status_code == 202
    assert len(second) == len(first) - 1  # no second write of last_used_at within the minute
    with time_machine.travel(T0 + datetime.timedelta(minutes=2), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            assert send(client, {**plain, "id": "l3"}).status_code == 202
    key.refresh_from_db()
    assert key.last_used_at == T0 + datetime.timedelta(minutes=2)


@pytest.mark.django_db
def test_negotiation_header_parsing_and_refused_bodies(defaults):
    """What REST framework answers for negotiation, a malformed Authorization header and bodies it refuses."""
    key, raw_key = ApiKey.issue("billing system", ApiKey.Scope.READ_WRITE)
    client = APIClient()  # no stored credentials: each request sends its own header
    invoice = InvoiceFactory()
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    cases = [
        ("accept html", {"HTTP_ACCEPT": "text/html"}, None, URL, 406),
        ("format override", {}, None, URL + "?format=xml", 404),
        ("indented json", {"HTTP_ACCEPT": "application/json; indent=4"}, None, URL, 202),
        ("no-break space in Authorization", {"HTTP_AUTHORIZATION": f"Bearer\xa0{raw_key}"}, None, URL, 401),
        ("deep body, wrong key", {"HTTP_AUTHORIZATION": f"Bearer dk_{key.prefix}_wrong"}, deep, URL, 401),
        ("deep body, right key", {}, deep, URL, 400),
    ]
    for n, (label, headers, body, url, expected) in enumerate(cases):
        event = {"id": f"neg-{n}", "type": "payment_failed", "invoice": invoice.external_id}
        response = client.generic("POST", url, body or json.dumps(event).encode(),
                                  content_type="application/json", HTTP_IDEMPOTENCY_KEY=f"neg-{n}",
                                  **{"HTTP_AUTHORIZATION": f"Bearer {raw_key}", **headers})
        assert response.status_code == expected, (label, response.status_code)
        if expected == 202:
            assert response.content.startswith(b"{\n"), label
    stored = set(InboundEvent.objects.values_list("event_id", flat=True))
    assert stored == {"neg-2"}
