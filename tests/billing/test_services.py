"""No charge on a closed invoice: closing cancels unsent attempts, the worker re-checks under lock
before the gateway call, and a success that arrives after the close is refunded (or held for staff)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.attempts import process_pending, process_refund, process_refunds
from billing.gateways import RefundRequest, get_gateway
from billing.models import CustomerCredit, GatewayRefund, Invoice, PaymentAttempt, SandboxCharge, SandboxRefund
from dunning import engine
from dunning.cases import cancel_case, open_case
from dunning.models import DunningCase, WorkItem
from dunning.payments import SETTLEMENT, record_payment
from dunning.receipts import mark_paid
from tests.factories import (
    CampaignFactory,
    CampaignStepFactory,
    CustomerFactory,
    InvoiceFactory,
    PaymentMethodFactory,
    retrying_campaign,
)
from tests.support.fake_stripe import FakeStripe
from tests.support.gateways import HookedGateway

pytestmark = pytest.mark.django_db


def queued_retry(token: str = "tok_ok", *later_actions: str, amount_due: str = "49.00", gateway: str = "sandbox"):
    """An open case whose retry step has just queued a pending attempt (nothing sent yet), and
    ``later_actions`` run by the same engine job."""
    retrying_campaign(*later_actions)
    customer = CustomerFactory(external_id=f"cus_{token.replace(':', '_')}")
    PaymentMethodFactory(customer=customer, token=token, gateway=gateway)
    invoice = InvoiceFactory(customer=customer, amount_due=Decimal(amount_due))
    case, _created = open_case(invoice, decline_code="insufficient_funds")
    engine.run_due_steps()
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    assert attempt.tries == 0 and (attempt.outcome == "pending" or later_actions)
    return case, invoice, attempt


def kinds(case: DunningCase) -> list[str]:
    return list(case.events.values_list("kind", flat=True))


@pytest.fixture
def hooked(settings):
    settings.PAYMENT_GATEWAY = "tests.support.gateways.HookedGateway"
    yield HookedGateway
    HookedGateway.before_charge = None


# --- Closing cancels what was never sent ----------------------------------------------------------

def test_staff_mark_paid_cancels_the_queued_retry_and_the_worker_never_calls_the_gateway(admin_client):
    case, invoice, attempt = queued_retry("tok_ok:markpaid")
    mark_paid(case, reference="bank transfer")

    attempt.refresh_from_db()
    assert attempt.outcome == PaymentAttempt.Outcome.CANCELLED and attempt.completed_at is not None
    event = case.events.get(kind="payment.attempts_cancelled")
    assert event.payload == {"attempts": [attempt.pk], "reason": "invoice paid"}
    assert process_pending(SETTLEMENT) == 0
    assert not SandboxCharge.objects.exists()
    # Staff see it in the attempts admin.
    page = admin_client.get("/admin/billing/paymentattempt/?outcome=cancelled").content.decode()
    assert invoice.number in page and "Cancelled: invoice paid" in page


def test_a_payment_reported_through_the_api_cancels_the_queued_retry(client):
    case, invoice, attempt = queued_retry("tok_ok:api")
    record_payment(invoice, invoice.amount_remaining, actor="api:billing system")
    attempt.refresh_from_db()
    assert attempt.outcome == PaymentAttempt.Outcome.CANCELLED
    process_pending(SETTLEMENT)
    assert not SandboxCharge.objects.exists()
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("49.00")


def test_cancelling_the_case_cancels_its_pending_attempts():
    case, _invoice, attempt = queued_retry("tok_ok:cancel")
    cancel_case(case, reason="customer left")
    attempt.refresh_from_db()
    assert attempt.outcome == PaymentAttempt.Outcome.CANCELLED
    assert "payment.attempts_cancelled" in kinds(case)
    process_pending(SETTLEMENT)
    assert not SandboxCharge.objects.exists()


def test_writing_the_invoice_off_cancels_the_retry_queued_before_it():
    # Retry, then write-off, both due now: the engine job runs them one after the other, before any
    # payment job.
    case, invoice, attempt = queued_retry("tok_ok:writeoff", "mark_uncollectible")
    invoice.refresh_from_db()
    attempt.refresh_from_db()
    assert invoice.status == Invoice.Status.UNCOLLECTIBLE
    assert attempt.outcome == PaymentAttempt.Outcome.CANCELLED
    assert case.events.get(kind="payment.attempts_cancelled").payload["reason"] == "invoice written off"
    process_pending(SETTLEMENT)
    assert not SandboxCharge.objects.exists()


def test_a_retry_step_after_the_write_off_charges_nothing():
    campaign = CampaignFactory()
    for position, action in enumerate(["mark_uncollectible", "retry", "call"], start=1):
        CampaignStepFactory(campaign=campaign, position=position, action=action, template_code="",
                            offset_days=30 if action == "call" else 0)
    customer = CustomerFactory()
    PaymentMethodFactory(customer=customer, token="tok_ok:after-writeoff")
    case, _created = open_case(InvoiceFactory(customer=customer))
    engine.run_due_steps()
    assert not PaymentAttempt.objects.exists()
    assert case.events.get(kind="step.retry_skipped").message == "Not charged: invoice uncollectible"


def test_the_worker_rechecks_the_invoice_whatever_closed_it():
    # An import (bulk update) voids the invoice without going through the services: the worker's
    # own check under lock refuses the charge.
    case, invoice, attempt = queued_retry("tok_ok:void")
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.VOID)
    process_pending(SETTLEMENT)
    attempt.refresh_from_db()
    assert attempt.outcome == PaymentAttempt.Outcome.CANCELLED and attempt.tries == 0
    assert attempt.message == "Cancelled: invoice void"
    assert not SandboxCharge.objects.exists()
    assert case.events.get(kind="payment.attempts_cancelled").message == "Not charged: invoice void"


def test_a_partial_payment_meanwhile_lowers_the_unsent_charge_to_what_remains():
    case, invoice, attempt = queued_retry("tok_ok:partial")
    record_payment(invoice, Decimal("19.00"))
    process_pending(SETTLEMENT)
    charge = SandboxCharge.objects.get()
    assert charge.amount == Decimal("30.00")
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID and invoice.amount_paid == Decimal("49.00")
    assert not CustomerCredit.objects.exists() and not GatewayRefund.objects.exists()


# --- A success after the close ------------------------------------------------------------------

def test_a_charge_that_succeeds_after_the_invoice_was_paid_is_refunded_once(hooked):
    case, invoice, attempt = queued_retry("tok_ok:late")
    # The customer pays by bank transfer while the worker's charge is in flight.
    hooked.before_charge = lambda request: mark_paid(DunningCase.objects.get(pk=case.pk))
    process_pending(SETTLEMENT)

    attempt.refresh_from_db()
    invoice.refresh_from_db()
    assert attempt.outcome == PaymentAttempt.Outcome.SUCCEEDED
    assert invoice.amount_paid == Decimal("49.00")  # one payment counted, not two
    refund = GatewayRefund.objects.get()
    assert (refund.status, refund.amount, refund.idempotency_key) == ("succeeded", Decimal("49.00"),
                                                                      f"late-refund:{attempt.pk}")
    [given_back] = SandboxRefund.objects.all()
    assert given_back.charge_reference == attempt.gateway_reference and given_back.amount == Decimal("49.00")
    assert not CustomerCredit.objects.exists()
    assert {"payment.late_charge", "payment.refunded"} <= set(kinds(case))

    # Running the jobs again refunds nothing more.
    process_pending(SETTLEMENT)
    process_refunds(SETTLEMENT)
    process_refund(refund.pk, SETTLEMENT)
    assert SandboxRefund.objects.count() == 1 and GatewayRefund.objects.count() == 1


def test_hold_keeps_the_late_charge_as_credit_and_asks_staff(hooked, settings):
    settings.LATE_CHARGE_POLICY = "hold"
    case, invoice, attempt = queued_retry("tok_ok:hold")
    hooked.before_charge = lambda request: mark_paid(DunningCase.objects.get(pk=case.pk))
    process_pending(SETTLEMENT)

    assert not GatewayRefund.objects.exists() and not SandboxRefund.objects.exists()
    credit = CustomerCredit.objects.get()
    assert credit.amount == Decimal("49.00") and credit.customer_id == invoice.customer_id
    item = WorkItem.objects.get(kind=WorkItem.Kind.LATE_CHARGE)
    assert item.case_id == case.pk and "49.00 USD" in item.title
    assert case.events.get(kind="payment.late_charge_held").payload["policy"] == "hold"


def test_an_unknown_outcome_is_still_resolved_after_the_close_and_the_late_success_refunded():
    # The charge is taken but its answer is lost; the customer then pays another way. The attempt
    # was sent, so it is not cancelled: asking again with its key returns the success, refunded.
    case, invoice, attempt = queued_retry("tok_timeout_after_charge:x")
    process_pending(SETTLEMENT)
    attempt.refresh_from_db()
    assert (attempt.outcome, attempt.tries) == ("pending", 1)
    mark_paid(case)
    attempt.refresh_from_db()
    assert attempt.outcome == PaymentAttempt.Outcome.PENDING  # never cancelled once sent
    process_pending(SETTLEMENT, now=attempt.lease_until)
    attempt.refresh_from_db()
    assert attempt.outcome == PaymentAttempt.Outcome.SUCCEEDED
    assert SandboxCharge.objects.count() == 1 and SandboxRefund.objects.count() == 1
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("49.00")


# --- Refunds through Stripe (the real SDK against the local fake) ------------------------------

@pytest.fixture
def fake_stripe(settings):
    server = FakeStripe().start()
    settings.STRIPE_API_KEY = "sk_test_local"
    settings.STRIPE_API_BASE = server.url
    settings.PAYMENT_GATEWAY = "billing.gateways.stripe.StripeGateway"
    yield server
    server.stop()


def test_stripe_refunds_a_late_charge_once_with_its_idempotency_key(fake_stripe):
    case, invoice, attempt = queued_retry("pm_ok_late", gateway="stripe")
    process_pending(SETTLEMENT)  # charged: the invoice is paid
    attempt.refresh_from_db()
    # Another attempt had been sent before (tries 1) and its answer lost; asked again after the
    # invoice was paid, it succeeds: a late charge, refunded through Stripe.
    late = PaymentAttempt.objects.create(
        invoice=invoice, payment_method=attempt.payment_method, amount=Decimal("49.00"), currency="USD",
        gateway="stripe", idempotency_key="late-one", tries=1, lease_until=attempt.created_at,
    )
    process_pending(SETTLEMENT)
    late.refresh_from_db()
    assert late.outcome == "succeeded" and late.gateway_reference.startswith("pi_")
    [refund] = fake_stripe.refunds
    assert refund["payment_intent"] == late.gateway_reference and refund["amount"] == 4900
    request = next(p for verb, path, p in fake_stripe.requests if path == "/v1/refunds")
    assert request["metadata"]["attempt"] == str(late.pk)
    assert GatewayRefund.objects.get().gateway_reference == refund["id"]
    # Asked again with the same key (a crash before the answer was saved): Stripe replays, no new refund.
    result = get_gateway().refund(RefundRequest(charge_reference=late.gateway_reference, amount=Decimal("49.00"),
                                                currency="USD", idempotency_key=f"late-refund:{late.pk}"))
    assert result.succeeded and result.reference == refund["id"]
    assert len(fake_stripe.refunds) == 1
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("49.00")
    assert {"payment.late_charge", "payment.refunded"} <= set(kinds(case))
