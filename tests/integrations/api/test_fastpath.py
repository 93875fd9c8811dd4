"""A plain payment_failed is answered without REST framework's pipeline (integrations.api.fastpath), on
PostgreSQL. It must answer exactly as the full pipeline does, and leave to it everything else."""

from __future__ import annotations

import datetime
import json
import uuid

import psycopg
import pytest
import time_machine
from django.core.cache import cache
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from integrations.api import fastpath
from integrations.api.serializers import PaymentEventInput
from integrations.api.views import PaymentEventViewSet
from integrations.models import ApiKey, IdempotencyRecord, PaymentEvent
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


def full_pipeline_only(monkeypatch):
    monkeypatch.setattr(fastpath, "accept_payment_failed", lambda request: None)


def no_full_pipeline(monkeypatch):
    def refuse(self, request, *args, **kwargs):
        raise AssertionError("the full pipeline ran")

    monkeypatch.setattr(PaymentEventViewSet, "initial", refuse)


# --- Which bodies the fast path takes -------------------------------------------------------------

TEXT = st.one_of(st.text(max_size=12), st.text(min_size=60, max_size=300), st.sampled_from(["", " x", "x ", "a\x00b",
                 "\ud800", "ünïcødé", "insufficient_funds"]))
VALUE = st.one_of(TEXT, st.none(), st.integers(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers()))
FIELDS = st.sampled_from(["id", "invoice", "decline_code", "message", "reference", "amount", "occurred_at",
                          "customer", "payment_method", "extra"])


@given(st.dictionaries(FIELDS, VALUE, max_size=7),
       st.sampled_from(["payment_failed", "payment_succeeded", "refunded", "payment_failed ", 1, None]))
@settings(max_examples=400, deadline=None)
def test_every_body_the_fast_path_takes_is_one_the_serializer_takes_with_the_same_values(fields, kind):
    data = {**fields, "type": kind}
    taken = fastpath.plain_event(data)
    serializer = PaymentEventInput(data=data)
    if taken is not None:
        assert serializer.is_valid(), serializer.errors
        assert dict(serializer.validated_data) == data
    elif serializer.is_valid() and kind == "payment_failed":
        # Declined but valid: it carries a field the fast path leaves to the full pipeline.
        assert set(data) - {"id", "type", "invoice", "decline_code", "message", "reference"} or any(
            not isinstance(v, str) or v != v.strip() for v in data.values())


def test_the_fast_path_takes_the_usual_event_and_its_rules_come_from_the_serializer():
    usual = {"id": "evt_1", "type": "payment_failed", "invoice": "in_1", "decline_code": "insufficient_funds",
             "message": "Your card has insufficient funds.", "reference": "ch_1"}
    assert fastpath.plain_event(usual) == usual
    assert set(fastpath.RULES) == {"id", "invoice", "decline_code", "message", "reference"}
    assert fastpath.RULES["invoice"] == (PaymentEventInput._declared_fields["invoice"].max_length, False)
    assert fastpath.plain_event({**usual, "invoice": "x" * 101}) is None
    assert fastpath.plain_event({**usual, "decline_code": ""}) == {**usual, "decline_code": ""}
    assert fastpath.plain_event({**usual, "id": ""}) is None


# --- The same answer on both paths ----------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.django_db
def test_a_plain_event_gets_the_same_answer_and_rows_on_both_paths(defaults, monkeypatch):
    client, key = client_for()
    invoice = InvoiceFactory()
    body = {"id": "evt_same", "type": "payment_failed", "invoice": invoice.external_id,
            "decline_code": "expired_card", "message": "Carte expirée", "reference": "ch_9"}

    def post_and_collect():
        with time_machine.travel(T0, tick=False):
            response = send(client, body, key="same-key")
        event = PaymentEvent.objects.values().get(event_id="evt_same")
        record = IdempotencyRecord.objects.values().get(key="same-key")
        PaymentEvent.objects.all().delete()
        IdempotencyRecord.objects.all().delete()
        for row in (event, record):
            row.pop("id")
        return response, event, record

    with monkeypatch.context() as patch:
        no_full_pipeline(patch)
        fast, fast_event, fast_record = post_and_collect()
    with monkeypatch.context() as patch:
        full_pipeline_only(patch)
        full, full_event, full_record = post_and_collect()
    assert fast.status_code == full.status_code == 202
    assert fast.content == full.content
    assert fast.json()["received_at"] == "2026-03-02T09:00:00Z"
    assert dict(fast.headers) == dict(full.headers)
    assert fast_event == full_event
    assert fast_event["payload"] == {k: v for k, v in body.items() if k not in ("id", "type")}
    assert fast_record == full_record and fast_record["status_code"] == 202


@pytest.mark.postgres
@pytest.mark.django_db
def test_anything_else_goes_on_to_the_full_pipeline(defaults, monkeypatch):
    client, _key = client_for()
    invoice = InvoiceFactory()
    no_full_pipeline(monkeypatch)
    assert send(client, {"id": "p1", "type": "payment_failed", "invoice": invoice.external_id}).status_code == 202
    with pytest.raises(AssertionError, match="full pipeline"):
        send(client, {"id": "p2", "type": "payment_failed", "invoice": invoice.external_id, "amount": "5.00"})
    with pytest.raises(AssertionError, match="full pipeline"):
        send(client, {"id": "p3", "type": "payment_failed", "invoice": f" {invoice.external_id}"})


# --- Keys, scopes, throttling ---------------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.django_db
def test_a_revoked_or_downgraded_key_is_refused_at_once_though_the_process_has_verified_it(defaults):
    client, key = client_for()
    invoice = InvoiceFactory()
    plain = {"type": "payment_failed", "invoice": invoice.external_id}
    assert send(client, {**plain, "id": "k1"}).status_code == 202  # the key is now verified in this process
    ApiKey.objects.filter(pk=key.pk).update(scope=ApiKey.Scope.READ)
    downgraded = send(client, {**plain, "id": "k2"})
    assert downgraded.status_code == 403
    ApiKey.objects.filter(pk=key.pk).update(scope=ApiKey.Scope.READ_WRITE)
    assert send(client, {**plain, "id": "k3"}).status_code == 202  # upgraded again: taken again
    key.refresh_from_db()
    key.revoke()
    revoked = send(client, {**plain, "id": "k4"})
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "authentication_failed"
    assert sorted(PaymentEvent.objects.values_list("event_id", flat=True)) == ["k1", "k3"]


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_wrong_secret_with_a_known_prefix_is_refused(defaults):
    client, key = client_for()
    invoice = InvoiceFactory()
    assert send(client, {"id": "s1", "type": "payment_failed", "invoice": invoice.external_id}).status_code == 202
    client.credentials(HTTP_AUTHORIZATION=f"Bearer dk_{key.prefix}_not-the-secret")
    assert send(client, {"id": "s2", "type": "payment_failed", "invoice": invoice.external_id}).status_code == 401
    assert not PaymentEvent.objects.filter(event_id="s2").exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_request_the_fast_path_hands_on_is_throttled_once_not_twice(defaults, settings):
    settings.API_THROTTLE_RATE = "3/min"
    cache.clear()
    client, _key = client_for()
    invoice = InvoiceFactory()
    plain = {"type": "payment_failed", "invoice": invoice.external_id}
    with time_machine.travel(T0, tick=False):
        assert send(client, {**plain, "id": "t1"}).status_code == 202
        assert send(client, {**plain, "id": "t2"}).status_code == 202
        repeat = send(client, {**plain, "id": "t1"})  # counted by the fast path, answered by the full pipeline
        assert repeat.status_code == 200 and repeat.json()["duplicate"] is True
        limited = send(client, {**plain, "id": "t3"})
        assert limited.status_code == 429 and limited["Retry-After"] == "60"
    assert not PaymentEvent.objects.filter(event_id="t3").exists()


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
    response = send(client, {**plain, "id": "c2"}, key="after-the-break")
    assert response.status_code == 202
    assert connection.connection.info.backend_pid != pid
    assert PaymentEvent.objects.filter(event_id="c2").count() == 1
    assert IdempotencyRecord.objects.get(key="after-the-break").status_code == 202


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_read_only_key_made_read_write_is_taken_by_the_fast_path_at_once(defaults, monkeypatch):
    client, key = client_for(ApiKey.Scope.READ)
    invoice = InvoiceFactory()
    plain = {"type": "payment_failed", "invoice": invoice.external_id}
    assert send(client, {**plain, "id": "u1"}).status_code == 403
    ApiKey.objects.filter(pk=key.pk).update(scope=ApiKey.Scope.READ_WRITE)
    no_full_pipeline(monkeypatch)
    assert send(client, {**plain, "id": "u2"}).status_code == 202


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_body_over_the_upload_limit_is_refused_on_both_paths(defaults, monkeypatch, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    client, _key = client_for()
    invoice = InvoiceFactory()
    body = {"id": "big", "type": "payment_failed", "invoice": invoice.external_id, "message": "m" * 200}
    answer = send(client, body, key="big-1")
    full_pipeline_only(monkeypatch)
    assert (send(client, body, key="big-2").status_code, answer.status_code) == (400, 400)
    assert not PaymentEvent.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_fast_path_records_when_the_key_was_last_used_once_a_minute(defaults, monkeypatch,
                                                                          django_capture_on_commit_callbacks):
    client, key = client_for()
    invoice = InvoiceFactory()
    plain = {"type": "payment_failed", "invoice": invoice.external_id}
    no_full_pipeline(monkeypatch)
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


@pytest.mark.postgres
@pytest.mark.django_db
def test_requests_only_the_full_pipeline_answers_get_its_answer(defaults, monkeypatch):
    """Negotiation, header parsing and refused bodies: the fast path must answer as the full pipeline
    does, so for each request both paths are asked and must agree."""
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
        answers = []
        for path, patch_it in (("fast", lambda patch: None), ("full", full_pipeline_only)):
            with monkeypatch.context() as patch:
                patch_it(patch)
                event = {"id": f"neg-{n}-{path}", "type": "payment_failed", "invoice": invoice.external_id}
                response = client.generic("POST", url, body or json.dumps(event).encode(),
                                          content_type="application/json", HTTP_IDEMPOTENCY_KEY=f"neg-{n}-{path}",
                                          **{"HTTP_AUTHORIZATION": f"Bearer {raw_key}", **headers})
            answers.append((response.status_code, response.content.replace(b"-full", b"-fast")
                            .replace(f"neg-{n}-fast".encode(), b"X") if response.status_code == 202 else b""))
        assert answers[0][0] == answers[1][0] == expected, (label, answers)
        if expected == 202:
            assert answers[0][1].startswith(b"{\n") == answers[1][1].startswith(b"{\n") is True, label
    stored = set(PaymentEvent.objects.values_list("event_id", flat=True))
    assert stored == {"neg-2-fast", "neg-2-full"}
