"""Payment plans: limits, approval, charging on schedule, a missed instalment resumes dunning."""

from __future__ import annotations

import datetime
import html
import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext
from rest_framework.test import APIClient

from billing.attempts import process
from billing.imports import ImportOptions, bytes_opener
from billing.models import Invoice, PaymentAttempt, SandboxCharge
from customers.models import Customer, PaymentMethod
from dunning import engine, plans
from dunning.cases import open_case, resume_case
from dunning.links import make_token
from dunning.models import DunningCase, WorkItem
from dunning.payments import SETTLEMENT
from dunning.plan_models import Instalment, PaymentPlan
from dunning.receipts import mark_paid
from integrations.imports import import_invoices
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory, PlanLimitFactory
from tests.support.imports import api_key, invoice_row, native_csv

pytestmark = pytest.mark.django_db


@pytest.fixture
def owing(defaults, clock):
    customer = CustomerFactory(email="bo@example.com")
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:bo")
    first = InvoiceFactory(customer=customer, amount_due=Decimal("100.00"))
    second = InvoiceFactory(customer=customer, amount_due=Decimal("50.00"))
    cases = [open_case(inv, decline_code="insufficient_funds")[0] for inv in (first, second)]
    return customer, [first, second], cases


def use_card(customer, token):
    PaymentMethod.objects.filter(customer=customer).update(is_default=False)
    PaymentMethodFactory(customer=customer, token=token)


def test_split_rounds_to_the_currency_and_the_last_instalment_takes_the_rest():
    assert plans.split(Decimal("100.00"), 3, "USD") == [Decimal("33.33"), Decimal("33.33"), Decimal("33.34")]
    assert plans.split(Decimal("10000"), 3, "JPY") == [Decimal("3333"), Decimal("3333"), Decimal("3334")]
    assert plans.add_months(datetime.date(2026, 1, 31), 1) == datetime.date(2026, 2, 28)


def test_a_plan_within_the_limits_is_accepted_and_pauses_dunning(owing, clock):
    customer, invoices, cases = owing
    PlanLimitFactory(currency="USD", min_instalment=Decimal("20"), max_months=4)
    plan = plans.request_plan(customer, 3)
    assert plan.status == PaymentPlan.Status.ACTIVE and plan.auto_approved
    assert plan.total == Decimal("150.00")
    assert [(i.due_date, i.amount) for i in plan.instalments.all()] == [
        (datetime.date(2026, 3, 2), Decimal("50.00")),
        (datetime.date(2026, 4, 2), Decimal("50.00")),
        (datetime.date(2026, 5, 2), Decimal("50.00")),
    ]
    assert set(DunningCase.objects.values_list("status", flat=True)) == {DunningCase.Status.PAUSED}
    assert not WorkItem.objects.exists()
    with pytest.raises(plans.PlanError):
        plans.request_plan(customer, 2)
    # Paused cases do not run their steps.
    clock.advance(days=5)
    assert engine.run_due_steps() == 0


@pytest.mark.parametrize("months,limit_kwargs", [
    (5, {"max_months": 4}),                    # too many months
    (6, {"min_instalment": Decimal("30")}),    # 25.00 a month is below the minimum
])
def test_a_plan_outside_the_limits_waits_for_staff(owing, months, limit_kwargs):
    customer, invoices, cases = owing
    PlanLimitFactory(currency="USD", **{"min_instalment": Decimal("20"), "max_months": 6, **limit_kwargs})
    plan = plans.request_plan(customer, months)
    assert plan.status == PaymentPlan.Status.PENDING
    item = WorkItem.objects.get(kind=WorkItem.Kind.PLAN_REQUEST)
    assert item.customer == customer and item.case in cases
    assert set(DunningCase.objects.values_list("status", flat=True)) == {DunningCase.Status.ACTIVE}


def test_no_limit_for_the_currency_means_staff_decide_and_can_approve(owing, admin_user):
    customer, invoices, cases = owing
    plan = plans.request_plan(customer, 2)
    assert plan.status == PaymentPlan.Status.PENDING
    plans.approve_plan(plan, actor=admin_user)
    plan.refresh_from_db()
    assert plan.status == PaymentPlan.Status.ACTIVE and plan.decided_by == admin_user
    assert WorkItem.objects.get(kind="plan_request").status == WorkItem.Status.DONE
    with pytest.raises(plans.PlanError):
        plans.approve_plan(plan, actor=admin_user)


def test_staff_reject_from_the_admin(owing, admin_client):
    customer, invoices, cases = owing
    plan = plans.request_plan(customer, 2)
    admin_client.post(reverse("admin:dunning_paymentplan_changelist"),
                      {"action": "reject", "_selected_action": [plan.pk]})
    plan.refresh_from_db()
    assert plan.status == PaymentPlan.Status.REJECTED
    assert not plan.instalments.exists()


def test_months_outside_two_to_six_are_refused(owing):
    customer, invoices, cases = owing
    for months in (1, 7):
        with pytest.raises(plans.PlanError):
            plans.request_plan(customer, months)
    assert not PaymentPlan.objects.exists()


def test_instalments_are_charged_on_schedule_once_and_the_plan_completes(owing, clock):
    customer, invoices, cases = owing
    use_card(customer, "tok_ok:bo")
    PlanLimitFactory(currency="USD", min_instalment=Decimal("20"), max_months=6)
    plan = plans.request_plan(customer, 2)  # 2 x 75.00 over invoices of 100.00 and 50.00
    assert plans.charge_due_instalments() == 1
    assert plans.charge_due_instalments() == 0  # run twice: nothing more
    first, second = invoices
    first.refresh_from_db()
    assert first.amount_paid == Decimal("75.00") and first.status == Invoice.Status.OPEN
    clock.advance(days=30)
    assert plans.charge_due_instalments() == 0  # 1 April: not yet due
    clock.advance(days=1)
    assert plans.charge_due_instalments() == 1
    plan.refresh_from_db()
    assert plan.status == PaymentPlan.Status.COMPLETED
    assert set(Instalment.objects.values_list("status", flat=True)) == {Instalment.Status.PAID}
    assert set(Invoice.objects.values_list("status", flat=True)) == {Invoice.Status.PAID}
    assert set(DunningCase.objects.values_list("status", flat=True)) == {DunningCase.Status.RECOVERED}
    # The second instalment spanned both invoices: 25.00 + 50.00.
    assert sorted(SandboxCharge.objects.filter(succeeded=True).values_list("amount", flat=True)) == [
        Decimal("25.00"), Decimal("50.00"), Decimal("75.00")]
    assert plans.charge_due_instalments() == 0


def test_a_missed_instalment_ends_the_plan_and_resumes_dunning(owing, clock):
    customer, invoices, cases = owing
    PlanLimitFactory(currency="USD", min_instalment=Decimal("20"), max_months=6)
    use_card(customer, "tok_ok:first")
    plan = plans.request_plan(customer, 3)
    assert plans.charge_due_instalments() == 1
    use_card(customer, "tok_insufficient_funds:later")
    clock.advance(days=31)
    assert plans.charge_due_instalments() == 1
    plan.refresh_from_db()
    assert plan.status == PaymentPlan.Status.DEFAULTED
    statuses = list(plan.instalments.values_list("status", flat=True))
    assert statuses == [Instalment.Status.PAID, Instalment.Status.MISSED, Instalment.Status.CANCELLED]
    assert set(DunningCase.objects.values_list("status", flat=True)) == {DunningCase.Status.ACTIVE}
    assert DunningCase.objects.filter(events__kind="plan.defaulted").count() == 2
    # Dunning carries on where it stopped: the next step of each case runs now, the later ones keep
    # their spacing instead of all firing at once.
    assert engine.run_due_steps() == 2
    assert engine.run_due_steps() == 0


def test_the_portal_plan_page_requests_a_plan(owing, client):
    customer, invoices, cases = owing
    PlanLimitFactory(currency="USD", min_instalment=Decimal("20"), max_months=6)
    page_url = reverse("portal:plan", kwargs={"token": make_token(customer)})
    page = client.get(page_url).content.decode()
    assert "$150.00" in page and "3 × $50.00" in page
    response = client.post(page_url, {"months": "3"}, follow=True)
    body = response.content.decode()
    assert "Your payment plan is active" in body and "Scheduled" in body
    assert PaymentPlan.objects.get().months == 3


def test_instalments_fall_due_on_the_customers_calendar_day(defaults, clock):
    customer = CustomerFactory(timezone="Pacific/Honolulu")  # UTC-10
    PaymentMethodFactory(customer=customer)
    clock.move_to(datetime.datetime(2026, 3, 2, 5, 0, tzinfo=datetime.UTC))  # 1 March, 19:00 in Honolulu
    open_case(InvoiceFactory(customer=customer, amount_due=Decimal("60.00")))
    PlanLimitFactory(currency="USD", min_instalment=Decimal("20"), max_months=6)
    plan = plans.request_plan(customer, 2)
    assert [i.due_date for i in plan.instalments.all()] == [datetime.date(2026, 3, 1), datetime.date(2026, 4, 1)]
    assert plans.charge_due_instalments() == 1
    clock.move_to(datetime.datetime(2026, 4, 1, 5, 0, tzinfo=datetime.UTC))  # still 31 March there
    assert plans.charge_due_instalments() == 0
    assert plan.instalments.get(number=2).status == Instalment.Status.SCHEDULED
    clock.move_to(datetime.datetime(2026, 4, 1, 12, 0, tzinfo=datetime.UTC))  # 1 April, 02:00 there
    assert plans.charge_due_instalments() == 1
    assert plan.instalments.get(number=2).status == Instalment.Status.PAID


def test_an_instalment_left_charging_by_a_dead_worker_is_settled_later_without_a_second_charge(owing, clock):
    customer, invoices, cases = owing
    use_card(customer, "tok_ok:bo")
    PlanLimitFactory(currency="USD", min_instalment=Decimal("20"), max_months=6)
    plan = plans.request_plan(customer, 3)
    first = plan.instalments.get(number=1)
    # A worker claimed it, sent the charge, then died before recording anything.
    assert plans.claim_due_instalments(clock.now.date()) == [first.pk]
    attempts = plans._create_attempts(first, clock.now)
    process(attempts[0], SETTLEMENT)
    first.refresh_from_db()
    assert first.status == Instalment.Status.CHARGING
    assert plans.charge_due_instalments() == 0  # a fresh claim is left to its worker
    first.refresh_from_db()
    assert first.status == Instalment.Status.CHARGING
    clock.advance(minutes=11)
    plans.charge_due_instalments()
    first.refresh_from_db()
    assert first.status == Instalment.Status.PAID
    assert SandboxCharge.objects.count() == 1


# --- Paying an invoice while its plan request waits -----------------------------------------------

def pay_by_staff(admin_client, invoice):
    case = DunningCase.objects.get(invoice=invoice)
    admin_client.post(reverse("admin:dunning_dunningcase_changelist"),
                      {"action": "mark_paid", "_selected_action": [case.pk]})


def pay_by_api_event(admin_client, invoice):
    _key, secret = api_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = client.post("/api/v1/payment-events/", {"id": "evt_paid", "type": "payment_succeeded",
                                                       "invoice": invoice.external_id},
                           format="json", HTTP_IDEMPOTENCY_KEY="k-paid")
    assert response.status_code == 201, response.content


def pay_by_import(admin_client, invoice):
    row = invoice_row(1, customer=invoice.customer.external_id, external_id=invoice.external_id,
                      number=invoice.number, amount_due=str(invoice.amount_due), amount_paid=str(invoice.amount_due),
                      issued_at=invoice.issued_at.isoformat(), due_date=invoice.due_date.isoformat())
    report = import_invoices(bytes_opener(native_csv([row]).encode()), ImportOptions())
    assert report.written and not report.errors


@pytest.mark.parametrize("pay", [pay_by_staff, pay_by_api_event, pay_by_import])
def test_paying_an_invoice_closes_its_pending_plan_request_with_a_timeline_note(owing, admin_client, pay):
    customer, (first, second), cases = owing
    plan = plans.request_plan(customer, 2)  # no limits for USD: waits for staff
    assert plan.status == PaymentPlan.Status.PENDING
    pay(admin_client, first)
    first.refresh_from_db()
    assert first.status == Invoice.Status.PAID
    plan.refresh_from_db()
    assert plan.status == PaymentPlan.Status.CANCELLED and plan.closed_at is not None
    assert WorkItem.objects.get(kind=WorkItem.Kind.PLAN_REQUEST).status == WorkItem.Status.DONE
    # The note is on the paid invoice's (now recovered) case and on the case still open.
    noted = DunningCase.objects.filter(events__kind="plan.closed")
    assert set(noted.values_list("invoice_id", flat=True)) == {first.pk, second.pk}
    note = noted.get(invoice=second).events.get(kind="plan.closed").message
    assert f"invoice {first.number} was paid" in note
    # Staff can no longer approve it, and the customer may ask for a plan for what is still owed.
    with pytest.raises(plans.PlanError, match="cancelled, not waiting for approval"):
        plans.approve_plan(plan)
    assert not Instalment.objects.exists()
    page = Client().get(reverse("portal:plan", kwargs={"token": make_token(customer)})).content.decode()
    assert "Closed after your payment" in page and "Overdue balance: $50.00" in page


def test_a_request_whose_invoice_is_no_longer_open_cannot_be_approved_from_the_admin(owing, admin_client):
    customer, (first, second), cases = owing
    plan = plans.request_plan(customer, 2)
    # Paid before payments closed pending requests (or the row changed under the request).
    Invoice.objects.filter(pk=first.pk).update(status=Invoice.Status.PAID, amount_paid=first.amount_due)
    response = admin_client.post(reverse("admin:dunning_paymentplan_changelist"),
                                 {"action": "approve", "_selected_action": [plan.pk]}, follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert shown == [f"Not done: #{plan.pk}: Plan #{plan.pk} cannot be approved: invoice {first.number} is paid"]
    plan.refresh_from_db()
    assert plan.status == PaymentPlan.Status.PENDING and not plan.instalments.exists()
    assert set(DunningCase.objects.values_list("status", flat=True)) == {DunningCase.Status.ACTIVE}


def test_an_instalment_is_paid_only_by_the_payment_that_paid_it(owing, clock):
    customer, invoices, cases = owing
    use_card(customer, "tok_ok:bo")
    PlanLimitFactory(currency="USD", min_instalment=Decimal("20"), max_months=6)
    plan = plans.request_plan(customer, 3)
    assert plan.status == PaymentPlan.Status.ACTIVE
    # Everything is paid by bank transfer before the first instalment is charged.
    for case in cases:
        resume_case(case)
        mark_paid(case)
    assert plans.charge_due_instalments() == 1
    assert not SandboxCharge.objects.exists()
    first = plan.instalments.get(number=1)
    assert first.status == Instalment.Status.CANCELLED and first.paid_at is None
    plan.refresh_from_db()
    assert plan.status == PaymentPlan.Status.COMPLETED
    assert not plan.instalments.filter(status=Instalment.Status.PAID).exists()
    # Where an instalment is paid, a succeeded payment keyed to it exists.
    other = CustomerFactory(email="cy@example.com")
    PaymentMethodFactory(customer=other, token="tok_ok:cy")
    open_case(InvoiceFactory(customer=other, amount_due=Decimal("60.00")))
    paid_plan = plans.request_plan(other, 2)
    assert plans.charge_due_instalments() == 1
    paid = paid_plan.instalments.get(number=1)
    assert paid.status == Instalment.Status.PAID
    assert PaymentAttempt.objects.filter(idempotency_key__startswith=f"plan:{paid.pk}:",
                                         outcome=PaymentAttempt.Outcome.SUCCEEDED).count() == 1


# --- What the plan page promises ------------------------------------------------------------------

TODAY_WORD = {"en": "today", "es": "hoy", "it": "oggi", "ja": "本日", "uk": "сьогодні"}


def option_labels(page: str) -> dict[int, str]:
    return {int(n): html.unescape(text)
            for n, text in re.findall(r'<label for="months-(\d)">(.*?)</label>', page, re.S)}


@pytest.mark.parametrize("locale", [code for code, _name in settings.LANGUAGES])
def test_the_plan_page_says_per_option_whether_it_is_charged_today_or_waits_for_approval(owing, client, locale):
    customer, invoices, cases = owing
    Customer.objects.filter(pk=customer.pk).update(locale=locale)
    url = reverse("portal:plan", kwargs={"token": make_token(customer)})
    with translation.override(locale):
        charged = gettext("Accepted at once; the first instalment is charged today.")
        waits = gettext("Sent to our team for approval; nothing is charged until then.")
    assert charged != waits
    # No limits for USD: every option needs approval, and nothing on the page says "today".
    page = client.get(url).content.decode()
    assert f'<html lang="{locale}">' in page
    labels = option_labels(page)
    assert sorted(labels) == [2, 3, 4, 5, 6] and all(waits in text for text in labels.values())
    assert TODAY_WORD[locale] not in page.lower()
    # Limits up to 4 months: those are accepted at once and charged today, the longer ones wait.
    PlanLimitFactory(currency="USD", min_instalment=Decimal("20"), max_months=4)
    labels = option_labels(client.get(url).content.decode())
    assert {n for n, text in labels.items() if charged in text} == {2, 3, 4}
    assert {n for n, text in labels.items() if waits in text} == {5, 6}
    assert all(TODAY_WORD[locale] not in labels[n].lower() for n in (5, 6))
