"""core.bulk: the engine's fast inserts (PostgreSQL) write exactly what bulk_create writes.

The engine writes its timeline events, outbox rows and pending attempts as column tuples
(core.bulk.insert_rows). On PostgreSQL that is an INSERT ... SELECT FROM json_to_recordset built by hand; on
other databases, and with FAST_INSERTS off, model instances through bulk_create. The same campaign
run both ways must leave the same rows, field by field.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.apps import apps
from django.core import mail
from django.core.management.color import no_style
from django.db import connection, transaction

from billing.models import PaymentAttempt
from core import bulk
from customers.models import BillingContact, Customer
from dunning.cases import open_case
from dunning.models import CaseEvent, DunningCase, WorkItem
from notifications.models import Notification
from tests.factories import BillingContactFactory, CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


def _rows(model, exclude=()):
    fields = [f.attname for f in model._meta.concrete_fields if f.attname not in exclude]
    return [{name: getattr(obj, name) for name in fields} for obj in model.objects.order_by("id")]


def _snapshot() -> dict:
    return {
        "events": _rows(CaseEvent),
        # provider ids are random in the console backends; claimed_by names the sending worker run
        "notifications": _rows(Notification, exclude=("provider_message_id", "claimed_by")),
        "attempts": _rows(PaymentAttempt, exclude=("gateway_reference",)),  # random in the sandbox
        "work_items": _rows(WorkItem),
        "cases": _rows(DunningCase),
        "customers": _rows(Customer),
        "mail": [(m.to, m.subject, m.body) for m in mail.outbox],
    }


def _campaign_run(clock) -> dict:
    """Thirty days of hourly worker passes, then everything it wrote; rolled back afterwards."""
    mail.outbox.clear()
    with transaction.atomic():
        # Both runs number their rows from the same point (a rollback does not rewind sequences).
        models = [m for m in apps.get_models() if m._meta.app_label in {"customers", "billing", "dunning",
                                                                       "notifications"}]
        with connection.cursor() as cursor:
            for sql in connection.ops.sequence_reset_sql(no_style(), models):
                cursor.execute(sql)
        for hour in range(30 * 24 + 1):
            clock.move_to(T0 + datetime.timedelta(hours=hour))
            clock.tick()
        snapshot = _snapshot()
        transaction.set_rollback(True)
    return snapshot


@pytest.mark.postgres
def test_the_engine_writes_the_same_rows_with_and_without_the_fast_inserts(defaults, clock, settings, monkeypatch):
    assert connection.vendor == "postgresql" and bulk.FAST_INSERTS
    settings.NOTIFY_QUIET_HOURS = "21:00-08:00"
    # Consolidation (three invoices, billing contacts with an escalation role), a declining card,
    # a customer without a method, a text-only customer (opted out of email) in another time zone.
    many = CustomerFactory(email="many@example.com", timezone="Europe/Rome")
    PaymentMethodFactory(customer=many, token="tok_insufficient_funds:many")
    BillingContactFactory(customer=many, is_primary=True, email="ap@example.org", language="it")
    BillingContactFactory(customer=many, role=BillingContact.Role.OWNER, email="owner@example.org")
    invoices = [InvoiceFactory(customer=many, amount_due=Decimal(a)) for a in ("10.00", "20.00", "30.5000")]
    declined = CustomerFactory(email="declined@example.com")
    PaymentMethodFactory(customer=declined, token="tok_card_declined:d")
    invoices.append(InvoiceFactory(customer=declined, amount_due=Decimal("99.99")))
    nomethod = CustomerFactory(email="nomethod@example.com", timezone="America/Los_Angeles")
    invoices.append(InvoiceFactory(customer=nomethod, amount_due=Decimal("5.00")))
    texter = CustomerFactory(email="t@example.com", phone="+14155550123", opt_out_email=True,
                             timezone="Asia/Tokyo")
    PaymentMethodFactory(customer=texter, token="tok_ok:texter")
    invoices.append(InvoiceFactory(customer=texter, amount_due=Decimal("12.34")))
    for invoice in invoices:
        open_case(invoice, decline_code="insufficient_funds")

    fast = _campaign_run(clock)
    monkeypatch.setattr(bulk, "FAST_INSERTS", False)
    portable = _campaign_run(clock)

    assert len(fast["events"]) > 30 and len(fast["notifications"]) > 5 and len(fast["attempts"]) > 3
    kinds = {e["kind"] for e in fast["events"]}
    assert {"step.retry", "step.retry_deferred", "case.exhausted", "message.consolidated"} <= kinds, kinds
    assert any(e["attempt_id"] for e in fast["events"])
    for kind in fast:
        assert fast[kind] == portable[kind], kind


@pytest.mark.parametrize("fast", [True, False])
def test_insert_rows_fills_defaults_returns_keys_in_order_and_skips_conflicts(db, monkeypatch, fast):
    monkeypatch.setattr(bulk, "FAST_INSERTS", fast)
    customer = CustomerFactory()
    at = datetime.datetime(2026, 3, 2, 10, 0, tzinfo=datetime.UTC)
    columns = ("customer_id", "channel", "recipient", "template_code", "locale", "context", "dedupe_key",
               "reference", "send_after")
    rows = [(customer.pk, "email", f"a{i}@example.com", "reminder", "en",
             {"n": i, "text": 'quo"te \\ back, {brace} \'single\' é€😀\n', "none": None, "list": [1, "x", 0.5]},
             f"k{i}", f"ref 'é' \\ \"{i}\"", at + datetime.timedelta(microseconds=i))
            for i in range(3)]
    bulk.insert_rows(Notification, columns, rows, ignore_conflicts=True)
    bulk.insert_rows(Notification, columns, [rows[1]], ignore_conflicts=True)  # the same key: skipped
    saved = list(Notification.objects.order_by("id"))
    assert [(n.recipient, n.context, n.reference, n.status, n.attempts, n.subject, n.sent_at, n.send_after)
            for n in saved] == [(f"a{i}@example.com", rows[i][5], rows[i][7], "queued", 0, "", None, rows[i][8])
                                for i in range(3)]
    assert all(n.created_at is not None and n.updated_at is not None for n in saved)
    invoice = InvoiceFactory(customer=customer)
    ids = bulk.insert_rows(PaymentAttempt, ("invoice_id", "amount", "currency", "idempotency_key"),
                           [(invoice.pk, Decimal("1.2345"), "USD", "x1"), (invoice.pk, Decimal("2"), "USD", "x2")],
                           returning=True)
    assert [PaymentAttempt.objects.get(pk=pk).idempotency_key for pk in ids] == ["x1", "x2"]
    assert PaymentAttempt.objects.get(pk=ids[0]).amount == Decimal("1.2345")
    assert PaymentAttempt.objects.get(pk=ids[1]).outcome == "pending"


def test_insert_rows_refuses_what_one_statement_cannot_write_faithfully(db):
    from django.db import connection

    from notifications.models import WebhookEndpoint

    with pytest.raises(ValueError, match="do not mix"):
        bulk.insert_rows(Notification, ("customer_id",), [(1,)], returning=True, ignore_conflicts=True)
    if connection.vendor != "postgresql":
        pytest.skip("the PostgreSQL statement's limits")
    # A default computed per row (the endpoint's signing secret) would be sent once for every row.
    with pytest.raises(TypeError, match="WebhookEndpoint.secret"):
        bulk.insert_rows(WebhookEndpoint, ("url",), [("https://a.example.com/hook",), ("https://b.example.com/hook",)])
    assert not WebhookEndpoint.objects.exists()
    # Column types keep their base type without lengths: numeric(14, 4) -> numeric, varchar(16) -> varchar.
    amount = PaymentAttempt._meta.get_field("amount")
    assert bulk._db_type(amount, connection) == "numeric"
    assert bulk._db_type(PaymentAttempt._meta.get_field("currency"), connection) == "varchar"


def test_load_cases_gives_what_select_related_only_gives(db):
    from dunning.batch import CASE_FIELDS, load_cases
    from tests.factories import CampaignFactory
    from tests.support.cases import make_case, utc

    campaign = CampaignFactory()
    cases = [make_case(CustomerFactory(name=f"Zoë {k}", phone="+34600000000" if k else ""), campaign,
                       amount=f"{k + 1}9.90", failed_at=utc(2026, 3, k + 1, 9), decline="expired_card")
             for k in range(3)]
    ids = [c.pk for c in cases]
    loaded = {c.pk: c for c in load_cases(ids)}
    expected = {c.pk: c for c in DunningCase.objects.filter(pk__in=ids).select_related("invoice", "customer")
                .only(*CASE_FIELDS)}
    assert loaded.keys() == expected.keys()
    for pk, case in expected.items():
        for name in CASE_FIELDS:
            obj, other = case, loaded[pk]
            *path, attr = name.split("__")
            for step in path:
                obj, other = getattr(obj, step), getattr(other, step)
            assert getattr(other, attr) == getattr(obj, attr), name
        assert loaded[pk].invoice.amount_remaining == case.invoice.amount_remaining
        assert loaded[pk].customer.tz == case.customer.tz
        assert loaded[pk].get_deferred_fields() == case.get_deferred_fields()
