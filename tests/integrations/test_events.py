"""payment_failed events are an inbox: stored pending by the request, applied by workers in batches."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from billing.models import Invoice, PaymentAttempt
from customers.models import Customer
from dunning import cases
from dunning.models import CaseEvent, DunningCase
from integrations import events
from integrations.models import ApiKey, InboundEvent
from tests.factories import CustomerFactory, InvoiceFactory

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)


def receive(n: int, prefix: str = "e", **extra) -> list[Invoice]:
    """n payment_failed events taken by the API's service, not applied yet (no commit runs in a test)."""
    key, _secret = ApiKey.issue("billing system", ApiKey.Scope.READ_WRITE)
    invoices = [InvoiceFactory(customer=CustomerFactory(), amount_due="25.00") for _ in range(n)]
    for k, invoice in enumerate(invoices):
        outcome = events.ingest(f"{prefix}{k}", "payment_failed",
                                {"invoice": invoice.external_id, "decline_code": "insufficient_funds", **extra},
                                api_key=key)
        assert outcome.event.status == "pending" and not outcome.duplicate
    return invoices


@pytest.mark.django_db
def test_pending_events_are_applied_in_batches_with_the_same_queries_for_any_batch_size(defaults):
    receive(61)
    assert not DunningCase.objects.exists()
    assert events.apply_pending(batch_size=1) == (1, 1)  # fills per-process caches (the decline table)
    with CaptureQueriesContext(connection) as small:
        assert events.apply_pending(batch_size=5) == (5, 5)
    with CaptureQueriesContext(connection) as large:
        assert events.apply_pending(batch_size=50) == (50, 50)
    assert len(small) == len(large)
    assert events.drain(batch_size=50) == 5
    assert InboundEvent.objects.filter(status="applied").count() == 61
    assert DunningCase.objects.count() == 61 == PaymentAttempt.objects.filter(outcome="failed").count()
    event = InboundEvent.objects.get(event_id="e7")
    case = DunningCase.objects.get(pk=event.result["case"])
    assert case.invoice_id == event.invoice_id and event.result["case_created"] is True
    assert PaymentAttempt.objects.get(pk=event.result["attempt"]).idempotency_key == "event:e7"
    assert case.events.get(kind="case.opened").actor_label == "api:billing system"
    assert events.drain() == 0  # nothing left: a second run does nothing


@pytest.mark.django_db
def test_steps_count_from_when_the_failure_happened_not_from_when_it_was_applied(defaults):
    with time_machine.travel(T0, tick=False) as traveller:
        [received] = receive(1, prefix="late")
        [reported] = receive(1, prefix="dated", occurred_at="2026-03-01T18:00:00Z")
        traveller.move_to(T0 + datetime.timedelta(hours=2))  # the workers were down for two hours
        events.drain()
    assert DunningCase.objects.get(invoice=received).failed_at == T0
    assert DunningCase.objects.get(invoice=reported).failed_at == datetime.datetime(2026, 3, 1, 18, tzinfo=datetime.UTC)
    applied = InboundEvent.objects.get(event_id="late0")
    assert applied.received_at == T0 and applied.applied_at == T0 + datetime.timedelta(hours=2)


@pytest.mark.django_db
def test_an_event_that_keeps_failing_is_rejected_and_does_not_hold_back_the_others(defaults, monkeypatch):
    invoices = receive(4)
    poison = invoices[2].pk
    real = cases.open_cases

    def flaky(failures, **kwargs):
        if any(f.invoice_id == poison for f in failures):
            raise RuntimeError("database hiccup")
        return real(failures, **kwargs)

    monkeypatch.setattr(cases, "open_cases", flaky)
    for attempt in range(1, events.MAX_TRIES + 1):
        events.drain()
        bad = InboundEvent.objects.get(invoice_id=poison)
        assert bad.tries == attempt and "database hiccup" in bad.error
    assert bad.status == "rejected"
    assert InboundEvent.objects.filter(status="applied").count() == 3
    assert not DunningCase.objects.filter(invoice_id=poison).exists()
    assert not PaymentAttempt.objects.filter(invoice_id=poison).exists()


@pytest.mark.django_db
def test_a_burst_wakes_one_worker_and_the_worker_keeps_draining_for_the_window(defaults, monkeypatch, settings):
    from django.core.cache import cache

    settings.PAYMENT_EVENTS_WAKE_SECONDS = 1
    cache.delete(events.WAKE_KEY)
    queued = []
    monkeypatch.setattr(events, "async_task", lambda *args, **kw: queued.append(args))
    for _ in range(5):
        events.wake_worker()
    assert len(queued) == 1 and queued[0][0] == "integrations.tasks.drain_payment_events"

    # The drain started by that wake-up keeps looking until its window is over, so an event whose own
    # wake-up was skipped (inside the window) is still applied. A fake clock instead of sleeping.
    now = [1000.0]
    late = []

    def fake_sleep(seconds):
        now[0] += seconds
        if not late:
            late.extend(receive(1, prefix="late"))

    monkeypatch.setattr(events.time, "time", lambda: now[0])
    monkeypatch.setattr(events.time, "sleep", fake_sleep)
    assert events.drain(until=1001.0) == 1
    assert DunningCase.objects.filter(invoice=late[0]).exists()
    assert now[0] >= 1001.0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_apply_every_event_exactly_once(defaults):
    n = 2000
    key, _secret = ApiKey.issue("billing system", ApiKey.Scope.READ_WRITE)
    customers = Customer.objects.bulk_create(Customer(external_id=f"c{i}", name=f"C {i}") for i in range(n))
    invoices = Invoice.objects.bulk_create(
        Invoice(external_id=f"i{i}", number=f"N{i}", customer=c, currency="USD", amount_due="10.00",
                issued_at=T0.date(), due_date=T0.date()) for i, c in enumerate(customers))
    # Every tenth invoice gets a second failure: it must be noted on the one case, never open a second.
    InboundEvent.objects.bulk_create(
        [InboundEvent(event_id=f"evt{i}", kind="payment_failed", api_key=key, invoice=inv, status="pending",
                      payload={"invoice": inv.external_id, "decline_code": "insufficient_funds"})
         for i, inv in enumerate(invoices)]
        + [InboundEvent(event_id=f"again{i}", kind="payment_failed", api_key=key, invoice=inv, status="pending",
                        payload={"invoice": inv.external_id}) for i, inv in enumerate(invoices[::10])])
    db = settings.DATABASES["default"]
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "DJANGO_SETTINGS_MODULE": "config.test_settings"}
    start_at = time.time() + 3
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "drain_process.py"), str(start_at),
                               "50"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    claimed = [int(out.strip().splitlines()[-1]) for out, _err in outputs]
    assert sum(claimed) == n + n // 10 and all(c > 0 for c in claimed), claimed
    assert InboundEvent.objects.filter(status="applied").count() == n + n // 10
    assert DunningCase.objects.count() == n
    assert PaymentAttempt.objects.count() == n + n // 10
    assert CaseEvent.objects.filter(kind="case.opened").count() == n
    assert CaseEvent.objects.filter(kind="payment.failed").count() == n // 10
    assert not CaseEvent.objects.values("attempt").annotate(k=Count("id")).filter(k__gt=1).exists()


@pytest.mark.django_db
def test_the_api_answers_202_and_a_repeat_shows_the_applied_event(defaults, django_capture_on_commit_callbacks):
    from rest_framework.test import APIClient

    _key, secret = ApiKey.issue("billing system", ApiKey.Scope.READ_WRITE)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    invoice = InvoiceFactory()
    body = {"id": "evt_api", "type": "payment_failed", "invoice": invoice.external_id}
    first = client.post("/api/v1/payment-events/", body, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
    assert first.status_code == 202 and first.json()["status"] == "pending"
    events.drain()
    repeat = client.post("/api/v1/payment-events/", body, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
    assert repeat.status_code == 200 and repeat.json()["status"] == "applied" and repeat.json()["duplicate"]
    # The same event id with another type is refused, not applied as something else.
    other = client.post("/api/v1/payment-events/", {**body, "type": "payment_succeeded"}, format="json",
                        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
    assert other.status_code == 409


@pytest.mark.django_db
def test_idempotency_keys_hold_for_payment_events(defaults):
    """A payment_failed is stored with its finished Idempotency-Key record; replays, reused keys,
    repeated event ids and unknown invoices answer as on every other POST."""
    from rest_framework.test import APIClient

    from integrations.models import IdempotencyRecord

    _key, secret = ApiKey.issue("billing system", ApiKey.Scope.READ_WRITE)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    invoice = InvoiceFactory()

    def send(body, key):
        return client.post("/api/v1/payment-events/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    body = {"id": "evt_k", "type": "payment_failed", "invoice": invoice.external_id}
    first = send(body, "k1")
    assert first.status_code == 202
    replay = send(body, "k1")
    assert replay.status_code == 202 and replay["Idempotent-Replayed"] == "true" and replay.json() == first.json()
    reused = send({**body, "id": "evt_other"}, "k1")
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"
    assert not InboundEvent.objects.filter(event_id="evt_other").exists()
    repeated = send(body, "k2")  # the same event under a new key: the stored event, and k2 remembers it
    assert repeated.status_code == 200 and repeated.json()["duplicate"] is True
    assert IdempotencyRecord.objects.get(key="k2").status_code == 200
    unknown = send({**body, "id": "evt_u", "invoice": "nope"}, "k3")
    assert unknown.status_code == 400 and "invoice" in unknown.json()["error"]["fields"]
    assert IdempotencyRecord.objects.get(key="k3").status_code == 400
    assert send({**body, "id": "evt_u", "invoice": "nope"}, "k3").status_code == 400
    assert InboundEvent.objects.filter(event_id__in=["evt_k"]).count() == 1
    assert IdempotencyRecord.objects.get(key="k1").response_body["status"] == "pending"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_idempotency_key_raced_by_two_processes_stores_one_event_with_its_record(defaults):
    """Two requests with the same Idempotency-Key and different events, at the same instant: the
    request that loses the key stores nothing, and is answered as a reused key (409)."""
    from integrations.models import IdempotencyRecord

    _key, secret = ApiKey.issue("billing system", ApiKey.Scope.READ_WRITE)
    invoice = InvoiceFactory()
    db = settings.DATABASES["default"]
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "DJANGO_SETTINGS_MODULE": "config.test_settings"}
    for round_ in range(3):
        start_at = time.time() + 3
        procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "queue_event_process.py"),
                                   str(start_at),
                                   secret, f"same-key-{round_}", f"evt-{round_}-{k}", invoice.external_id],
                                  env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for k in range(2)]
        outputs = [p.communicate(timeout=120) for p in procs]
        for proc, (_out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
        assert sorted(out.strip().splitlines()[-1] for out, _err in outputs) == ["False", "True"]
        stored = InboundEvent.objects.filter(event_id__startswith=f"evt-{round_}-")
        record = IdempotencyRecord.objects.get(key=f"same-key-{round_}")
        assert stored.count() == 1 and record.response_body["id"] == stored.get().event_id


@pytest.mark.django_db
def test_the_stored_payload_is_the_same_on_every_path(defaults):
    from rest_framework.test import APIClient

    _key, secret = ApiKey.issue("billing system", ApiKey.Scope.READ_WRITE)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    invoice = InvoiceFactory()
    client.post("/api/v1/payment-events/", {"id": "evt_pl", "type": "payment_failed", "invoice": invoice.external_id,
                                            "decline_code": "expired_card"}, format="json",
                HTTP_IDEMPOTENCY_KEY="pl-1")
    assert InboundEvent.objects.get(event_id="evt_pl").payload == {"invoice": invoice.external_id,
                                                                    "decline_code": "expired_card"}
