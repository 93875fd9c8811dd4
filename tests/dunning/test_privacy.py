"""Export everything about a customer; erase the person while invoices stay for tax retention."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import models

from billing.models import Invoice, PaymentAttempt
from customers.models import BillingContact, Customer, PaymentMethod
from dunning import privacy
from dunning.cases import open_case
from dunning.models import CaseEvent, DunningCase
from dunning.payments import record_payment
from dunning.timeline import log
from dunning.workqueue import create_work_item
from notifications.models import Notification
from tests.factories import BillingContactFactory, CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.clock import T0

pytestmark = pytest.mark.django_db

PERSON = {
    "name": "Zelda Quixote-Smythe",
    "email": "zelda.quixote@example.net",
    "phone": "+14155550199",
    "contact_name": "Yannick Ortolan",
    "contact_email": "yannick.ortolan@example.net",
    "contact_phone": "+393331234567",
    "owner_name": "Wilhelmina Brandvold",
    "owner_email": "w.brandvold@example.net",
    "token": "tok_insufficient_funds:zelda-card",
}


def run_days(clock, days: int) -> None:
    for hour in range(0, days * 24 + 1, 6):  # every step is at a whole day
        clock.move_to(T0 + datetime.timedelta(hours=hour))
        clock.tick()


@pytest.fixture
def zelda(defaults, clock, admin_user):
    """A customer after two weeks of dunning: messages sent, retries, notes, a work item, contacts."""
    customer = CustomerFactory(name=PERSON["name"], email=PERSON["email"], phone=PERSON["phone"],
                               currency="EUR", is_business=True)
    BillingContactFactory(customer=customer, name=PERSON["contact_name"], email=PERSON["contact_email"],
                          phone=PERSON["contact_phone"], is_primary=True)
    BillingContactFactory(customer=customer, name=PERSON["owner_name"], email=PERSON["owner_email"],
                          role=BillingContact.Role.OWNER)
    PaymentMethodFactory(customer=customer, token=PERSON["token"], last4="1881")
    invoices = [InvoiceFactory(customer=customer, amount_due=Decimal(a)) for a in ("120.00", "80.50")]
    for invoice in invoices:
        open_case(invoice, decline_code="insufficient_funds")
    case = DunningCase.objects.filter(customer=customer).first()
    log(case, "note", f"Called {PERSON['name']} on {PERSON['phone']}", actor="staff")
    create_work_item(customer, "call", f"Call {PERSON['contact_name']}",
                              body=f"Ask {PERSON['owner_email']} about the card", case=case)
    record_payment(invoices[1], Decimal("30.00"))
    run_days(clock, 15)
    LogEntry.objects.create(user=admin_user, content_type=ContentType.objects.get_for_model(Customer),
                            object_id=str(customer.pk), object_repr=str(customer), action_flag=CHANGE,
                            change_message="[]")
    # Someone else, who must be left alone.
    other = CustomerFactory(name="Ottavio Bystander", email="ottavio@example.org")
    open_case(InvoiceFactory(customer=other))
    run_days(clock, 1)
    return customer


def personal_hits(values) -> list[str]:
    """Every text, char and JSON column of every model, searched for the given values."""
    needles = [v.lower() for v in values]
    hits = []
    for model in apps.get_models():
        fields = [f for f in model._meta.concrete_fields
                  if isinstance(f, models.CharField | models.TextField | models.JSONField)]
        if not fields:
            continue
        for row in model._default_manager.values_list("pk", *[f.attname for f in fields]):
            for f, value in zip(fields, row[1:], strict=True):
                text = json.dumps(value) if isinstance(value, dict | list) else str(value or "")
                for needle in needles:
                    if needle in text.lower():
                        hits.append(f"{model._meta.label}.{f.name}#{row[0]}: {needle}")
    return hits


def test_export_contains_everything_held_about_the_customer(zelda):
    data = privacy.export_customer(zelda)
    json.dumps(data)
    assert data["customer"]["name"] == PERSON["name"] and data["customer"]["email"] == PERSON["email"]
    assert {c["email"] for c in data["billing_contacts"]} == {PERSON["contact_email"], PERSON["owner_email"]}
    method = data["payment_methods"][0]
    assert method["last4"] == "1881" and method["brand"] == "visa" and "token" not in method
    assert PERSON["token"] not in json.dumps(data)
    assert len(data["invoices"]) == 2
    first = next(i for i in data["invoices"] if i["amount_due"].startswith("120"))
    assert [a["outcome"] for a in first["attempts"]] == ["failed", "failed"]
    partial = next(i for i in data["invoices"] if i["amount_due"].startswith("80.5"))
    assert [Decimal(p["to_invoice"]) for p in partial["payments"]] == [Decimal("30.00")]
    assert {m["recipient"] for m in data["messages"]} == {PERSON["contact_email"]}
    assert all(m["body_text"] for m in data["messages"] if m["status"] == "sent")
    timeline = [e["kind"] for case in data["cases"] for e in case["timeline"]]
    assert "case.opened" in timeline and "note" in timeline and "payment.partial" in timeline
    assert data["work_items"][0]["title"] == f"Call {PERSON['contact_name']}"
    assert "Ottavio" not in json.dumps(data)


def test_erasure_is_refused_while_a_case_is_open(zelda):
    with pytest.raises(privacy.PrivacyError):
        privacy.erase_customer(zelda, actor=None)
    zelda.refresh_from_db()
    assert zelda.name == PERSON["name"] and zelda.erased_at is None
    assert personal_hits([PERSON["email"]])  # the search does find what is there


def test_erasure_leaves_no_personal_value_anywhere_and_keeps_invoices(zelda, admin_user):
    invoices_before = list(Invoice.objects.order_by("pk").values_list("number", "amount_due", "amount_paid",
                                                                      "issued_at", "due_date", "status"))
    attempts_before = list(PaymentAttempt.objects.order_by("pk").values_list("amount", "outcome", "created_at"))
    assert personal_hits(PERSON.values())  # before: everywhere

    counts = privacy.erase_customer(zelda, actor=admin_user, close_active_cases=True)

    assert personal_hits(PERSON.values()) == []
    assert personal_hits(["Ottavio Bystander"])  # other customers are untouched
    assert list(Invoice.objects.order_by("pk").values_list("number", "amount_due", "amount_paid", "issued_at",
                                                           "due_date", "status")) == invoices_before
    assert list(PaymentAttempt.objects.order_by("pk").values_list("amount", "outcome", "created_at")) == \
        attempts_before
    zelda.refresh_from_db()
    assert zelda.erased_at is not None and zelda.email == "" and str(zelda.phone) == ""
    assert not BillingContact.objects.filter(customer=zelda).exists()
    assert counts["contacts"] == 2
    method = PaymentMethod.objects.get(customer=zelda)
    assert method.last4 == "" and method.detached_at is not None
    assert all(not n.body_text and not n.recipient and n.context == {}
               for n in Notification.objects.filter(customer=zelda))
    cases = DunningCase.objects.filter(customer=zelda)
    assert {c.status for c in cases} == {DunningCase.Status.CANCELLED}
    erased = CaseEvent.objects.filter(case__customer=zelda, kind="customer.erased")
    assert erased.count() == cases.count() and erased.first().actor == admin_user
    # Nothing more is sent to an erased customer.
    from dunning import engine

    sent = Notification.objects.filter(customer=zelda).count()
    engine.run_due_steps(T0 + datetime.timedelta(days=60))
    assert Notification.objects.filter(customer=zelda).count() == sent


def test_exporting_an_erased_customer_returns_no_personal_data(zelda):
    privacy.erase_customer(zelda, close_active_cases=True)
    text = json.dumps(privacy.export_customer(zelda)).lower()
    assert not [v for v in PERSON.values() if v.lower() in text]


def test_admin_exports_json_and_erases_after_confirmation(zelda, admin_client):
    url = "/admin/customers/customer/"
    response = admin_client.post(url, {"action": "export_personal_data", "_selected_action": [zelda.pk]})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert "attachment" in response["Content-Disposition"]
    assert json.loads(response.content)["customer"]["email"] == PERSON["email"]

    ask = admin_client.post(url, {"action": "erase_personal_data", "_selected_action": [zelda.pk]})
    assert ask.status_code == 200 and b"close_active_cases" in ask.content
    refused = admin_client.post(url, {"action": "erase_personal_data", "_selected_action": [zelda.pk],
                                      "confirm": "yes"}, follow=True)
    assert "open dunning case" in refused.content.decode()
    zelda.refresh_from_db()
    assert zelda.erased_at is None
    admin_client.post(url, {"action": "erase_personal_data", "_selected_action": [zelda.pk], "confirm": "yes",
                            "close_active_cases": "on"}, follow=True)
    zelda.refresh_from_db()
    assert zelda.erased_at is not None and zelda.name.startswith("Erased customer")
