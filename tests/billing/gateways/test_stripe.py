"""The Stripe gateway on the real SDK against a local server speaking Stripe's wire format, and the
webhook endpoint with events signed by the SDK's scheme: valid, tampered, replayed, out of order."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from billing.gateways import get_gateway
from billing.models import Invoice, PaymentAttempt
from customers.models import PaymentMethod
from dunning.cases import open_case
from dunning.models import DunningCase, WorkItem
from integrations.gateway_events import refresh_payment_method
from integrations.models import InboundEvent
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.clock import T0
from tests.support.fake_stripe import FakeStripe, event, sign

pytestmark = pytest.mark.django_db
SECRET = "whsec_test_secret"
URL = "/webhooks/stripe/"


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET


@pytest.fixture
def fake_stripe(settings):
    server = FakeStripe().start()
    settings.STRIPE_API_KEY = "sk_test_local"
    settings.STRIPE_API_BASE = server.url
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.PAYMENT_GATEWAY = "billing.gateways.stripe.StripeGateway"
    yield server
    server.stop()


def stripe_customer(pm: str = "pm_ok_1", **card):
    customer = CustomerFactory(external_id=f"cus_{pm}")
    method = PaymentMethodFactory(customer=customer, gateway="stripe", token=pm, **card)
    return customer, method


def post(client, payload: str, *, secret: str = SECRET, timestamp: int | None = None, signature: str | None = None):
    header = signature if signature is not None else sign(payload, secret, timestamp or int(time.time()))
    return client.post(URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)


# --- Charges --------------------------------------------------------------------------------------

def test_a_retry_confirms_a_payment_intent_off_session_with_the_idempotency_key(defaults, clock, fake_stripe):
    customer, method = stripe_customer("pm_ok_1")
    invoice = InvoiceFactory(customer=customer, amount_due="49.00")
    case, _ = open_case(invoice)
    clock.move_to(T0.replace(day=5))
    clock.tick()
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    assert attempt.outcome == "succeeded"
    assert attempt.gateway_reference.startswith("pi_")
    [(verb, path, params)] = [r for r in fake_stripe.requests if r[1] == "/v1/payment_intents"]
    assert params["amount"] == "4900" and params["currency"] == "usd"
    assert params["customer"] == customer.external_id and params["payment_method"] == "pm_ok_1"
    assert params["off_session"] == "true" and params["confirm"] == "true"
    assert params["metadata"]["attempt"] == str(attempt.pk)
    assert list(fake_stripe.idempotent) == [attempt.idempotency_key]
    case.refresh_from_db()
    assert case.status == DunningCase.Status.RECOVERED


@pytest.mark.parametrize(("pm", "codes", "decline_class"), [
    ("pm_decline_insufficient_funds", ("insufficient_funds", "", ""), "soft"),
    ("pm_decline_expired_card", ("expired_card", "", ""), "needs_new_method"),
    ("pm_advice_03", ("do_not_honor", "", "03"), "hard"),
    ("pm_network_43", ("generic_decline", "43", ""), "hard"),
])
def test_card_errors_carry_decline_network_and_advice_codes(defaults, clock, fake_stripe, pm, codes, decline_class):
    customer, method = stripe_customer(pm, brand="mastercard")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice)
    clock.move_to(T0.replace(day=5))
    clock.tick()
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    assert (attempt.outcome, attempt.decline_code, attempt.network_code, attempt.advice_code) == ("failed", *codes)
    assert attempt.decline_class == decline_class
    assert attempt.gateway_reference.startswith("pi_")
    method.refresh_from_db()
    assert (method.charge_blocked_at is not None) == (decline_class in ("hard", "needs_new_method"))


def test_charge_taken_then_connection_dropped_is_reconciled_without_a_second_charge(defaults, clock, fake_stripe):
    customer, method = stripe_customer("pm_drop_after_charge")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice)
    clock.move_to(T0.replace(day=5))
    clock.tick()
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    assert attempt.outcome == "pending"                       # outcome unknown: kept, not failed
    assert len(fake_stripe.charges) == 1                      # ...although the money was taken
    assert case.events.filter(kind="payment.outcome_unknown").count() == 1
    clock.advance(minutes=10)
    clock.tick()                                              # asked again with the same key
    attempt.refresh_from_db()
    assert (attempt.outcome, attempt.tries) == ("succeeded", 2)
    assert attempt.gateway_reference == fake_stripe.charges[0]["id"]
    assert len(fake_stripe.charges) == 1                      # exactly one charge on the server
    assert len([r for r in fake_stripe.requests if r[1] == "/v1/payment_intents"]) == 2
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID and invoice.amount_paid == invoice.amount_due


def test_a_lost_answer_is_also_reconciled_by_the_payment_intent_webhook(defaults, clock, fake_stripe, client):
    customer, method = stripe_customer("pm_drop_after_charge")
    invoice = InvoiceFactory(customer=customer)
    open_case(invoice)
    clock.move_to(T0.replace(day=5))
    clock.tick()
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    intent = fake_stripe.charges[0]
    response = post(client, event("payment_intent.succeeded", intent, created=int(time.time())))
    assert response.status_code == 200
    attempt.refresh_from_db()
    assert attempt.outcome == "succeeded"
    clock.advance(hours=1)
    clock.tick()  # nothing left to ask
    assert len(fake_stripe.charges) == 1
    assert PaymentAttempt.objects.get(pk=attempt.pk).tries == 1


def test_setup_intent_detach_and_method_lookup(fake_stripe):
    gateway = get_gateway()
    session = gateway.start_method_update("cus_1")
    assert session.reference.startswith("seti_") and session.client_secret.startswith(session.reference)
    fake_stripe.add_method("pm_new", customer="cus_1", brand="mastercard", last4="4444", exp_month=3, exp_year=2031)
    details = gateway.retrieve_method("pm_new")
    assert (details.brand, details.last4, details.exp_month, details.exp_year) == ("mastercard", "4444", 3, 2031)
    gateway.detach("pm_new")
    assert fake_stripe.detached == ["pm_new"]


# --- Webhooks --------------------------------------------------------------------------------------

def failed_invoice(invoice, *, decline_code="insufficient_funds", attempt_count=1, pm="pm_ok_1", **error):
    return {
        "id": invoice.external_id, "object": "invoice", "customer": invoice.customer.external_id,
        "currency": invoice.currency.lower(), "amount_due": 4900, "amount_paid": 0, "attempt_count": attempt_count,
        "status": "open",
        "payment_intent": {"id": f"pi_{invoice.external_id}_{attempt_count}", "object": "payment_intent",
                           "payment_method": pm, "status": "requires_payment_method",
                           "last_payment_error": {"type": "card_error", "code": "card_declined",
                                                  "decline_code": decline_code, **error}},
    }


def paid_invoice(invoice, pi="pi_paid_1"):
    return {"id": invoice.external_id, "object": "invoice", "customer": invoice.customer.external_id,
            "currency": invoice.currency.lower(), "amount_paid": int(Decimal(invoice.amount_due) * 100),
            "status": "paid", "payment_intent": pi, "attempt_count": 2}


def test_a_valid_payment_failed_event_opens_a_case_and_a_hard_decline_asks_for_a_new_card(defaults, client):
    customer, method = stripe_customer("pm_ok_1")
    invoice = InvoiceFactory(customer=customer)
    payload = event("invoice.payment_failed", failed_invoice(invoice, decline_code="stolen_card",
                                                             network_decline_code="43"), created=int(time.time()))
    response = post(client, payload)
    assert response.status_code == 200
    case = DunningCase.objects.get(invoice=invoice)
    assert case.decline_code == "stolen_card"
    assert case.retry_state == DunningCase.RetryState.NEEDS_PAYMENT_METHOD
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    assert (attempt.source, attempt.outcome, attempt.network_code, attempt.decline_class) == (
        "external", "failed", "43", "hard")
    method.refresh_from_db()
    assert method.charge_blocked_at is not None
    assert WorkItem.objects.filter(case=case, kind="needs_payment_method").count() == 1
    assert InboundEvent.objects.get(source="stripe").kind == "invoice.payment_failed"


@pytest.mark.parametrize("how", ["tampered body", "wrong secret", "old timestamp", "no signature"])
def test_an_unverifiable_webhook_is_refused_and_nothing_is_recorded(defaults, client, how):
    customer, _ = stripe_customer("pm_ok_1")
    invoice = InvoiceFactory(customer=customer)
    payload = event("invoice.payment_failed", failed_invoice(invoice), created=int(time.time()))
    if how == "tampered body":
        header = sign(payload, SECRET)
        payload = payload.replace('"amount_due": 4900', '"amount_due": 1')
        response = post(client, payload, signature=header)
    elif how == "wrong secret":
        response = post(client, payload, secret="whsec_someone_else")
    elif how == "old timestamp":
        response = post(client, payload, timestamp=int(time.time()) - 301)
    else:
        response = post(client, payload, signature="")
    assert response.status_code == 400
    assert not InboundEvent.objects.exists()
    assert not DunningCase.objects.exists()
    assert not PaymentAttempt.objects.exists()


def test_a_replayed_event_has_one_effect(defaults, client):
    customer, _ = stripe_customer("pm_ok_1")
    invoice = InvoiceFactory(customer=customer, amount_due="49.00")
    open_case(invoice, decline_code="insufficient_funds")
    payload = event("invoice.paid", paid_invoice(invoice), created=int(time.time()))
    first, second = post(client, payload), post(client, payload)
    assert first.status_code == second.status_code == 200
    assert second.json()["result"] == "duplicate: already processed"
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("49.00")
    assert PaymentAttempt.objects.filter(invoice=invoice, outcome="succeeded").count() == 1
    # The same payment announced by payment_intent.succeeded (another event id) is not counted again.
    intent = {"id": "pi_paid_1", "object": "payment_intent", "amount_received": 4900, "currency": "usd",
              "customer": customer.external_id, "invoice": invoice.external_id, "metadata": {}}
    assert post(client, event("payment_intent.succeeded", intent, created=int(time.time()))).status_code == 200
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("49.00")
    assert DunningCase.objects.get(invoice=invoice).status == DunningCase.Status.RECOVERED


def test_events_out_of_order_have_the_effect_of_the_right_order(defaults, client):
    customer, method = stripe_customer("pm_ok_1")
    invoice = InvoiceFactory(customer=customer, amount_due="49.00")
    now = int(time.time())
    failed = event("invoice.payment_failed", failed_invoice(invoice), created=now - 60)
    paid = event("invoice.paid", paid_invoice(invoice), created=now)
    assert post(client, paid).status_code == 200        # the later event arrives first
    assert post(client, failed).status_code == 200      # the earlier failure arrives late
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert not DunningCase.objects.exists()             # no dunning for an invoice already paid

    # Payment-method updates: an older snapshot never overwrites a newer one.
    newer = {"id": "pm_ok_1", "object": "payment_method", "type": "card", "customer": customer.external_id,
             "card": {"brand": "visa", "last4": "4242", "exp_month": 9, "exp_year": 2031}}
    older = {**newer, "card": {**newer["card"], "exp_month": 1, "exp_year": 2030}}
    assert post(client, event("payment_method.updated", newer, created=now)).status_code == 200
    assert post(client, event("payment_method.updated", older, created=now - 30)).status_code == 200
    method.refresh_from_db()
    assert (method.exp_month, method.exp_year) == (9, 2031)
    assert InboundEvent.objects.filter(source="stripe", result__message__startswith="stale").count() == 1


def test_a_new_card_from_a_setup_intent_becomes_default_and_retries_open_invoices_once(
        defaults, client, fake_stripe, django_capture_on_commit_callbacks):
    customer, old = stripe_customer("pm_decline_expired_card")
    invoice = InvoiceFactory(customer=customer, amount_due="20.00")
    open_case(invoice, decline_code="expired_card")
    assert DunningCase.objects.get().retry_state == "needs_payment_method"
    fake_stripe.add_method("pm_ok_new", customer=customer.external_id, brand="mastercard", last4="4444",
                           exp_month=8, exp_year=2032)
    seti = {"id": "seti_1", "object": "setup_intent", "customer": customer.external_id,
            "payment_method": "pm_ok_new", "status": "succeeded", "usage": "off_session"}
    payload = event("setup_intent.succeeded", seti, created=int(time.time()))
    with django_capture_on_commit_callbacks(execute=True):  # the retry runs in a worker after the commit
        assert post(client, payload).status_code == 200
    new = PaymentMethod.objects.get(token="pm_ok_new")
    assert (new.is_default, new.brand, new.last4, new.exp_year) == (True, "mastercard", "4444", 2032)
    old.refresh_from_db()
    assert not old.is_default
    case = DunningCase.objects.get()
    assert case.status == DunningCase.Status.RECOVERED
    assert len(fake_stripe.charges) == 1
    # Replayed, or announced again as payment_method.attached: no second charge.
    with django_capture_on_commit_callbacks(execute=True):
        post(client, payload)
        attached = {**fake_stripe.methods["pm_ok_new"]}
        post(client, event("payment_method.attached", attached, created=int(time.time())))
    assert len(fake_stripe.charges) == 1


def test_an_updated_expiry_unblocks_the_card_and_retries_once(defaults, client, fake_stripe,
                                                              django_capture_on_commit_callbacks):
    customer, method = stripe_customer("pm_ok_exp", exp_month=1, exp_year=2026)
    method.charge_blocked_at = T0
    method.save()
    invoice = InvoiceFactory(customer=customer, amount_due="15.00")
    open_case(invoice, decline_code="expired_card")
    pm = {"id": "pm_ok_exp", "object": "payment_method", "type": "card", "customer": customer.external_id,
          "card": {"brand": "visa", "last4": "4242", "exp_month": 1, "exp_year": 2029}}
    with django_capture_on_commit_callbacks(execute=True):  # the retry runs in a worker after the commit
        assert post(client, event("payment_method.automatically_updated", pm,
                                  created=int(time.time()))).status_code == 200
    method.refresh_from_db()
    assert method.charge_blocked_at is None and method.exp_year == 2029
    assert DunningCase.objects.get().status == DunningCase.Status.RECOVERED
    assert len(fake_stripe.charges) == 1


def test_customer_updated_syncs_email_and_default_method(defaults, client, fake_stripe):
    customer, first = stripe_customer("pm_ok_a")
    second = PaymentMethodFactory(customer=customer, gateway="stripe", token="pm_ok_b", is_default=False)
    obj = {"id": customer.external_id, "object": "customer", "email": "new@example.com", "name": customer.name,
           "invoice_settings": {"default_payment_method": "pm_ok_b"}}
    assert post(client, event("customer.updated", obj, created=int(time.time()))).status_code == 200
    customer.refresh_from_db()
    second.refresh_from_db()
    first.refresh_from_db()
    assert customer.email == "new@example.com"
    assert second.is_default and not first.is_default


def test_unknown_event_types_are_acknowledged_and_ignored(client):
    payload = json.dumps({"id": "evt_x", "object": "event", "type": "charge.dispute.created", "created": 1,
                          "data": {"object": {"id": "dp_1"}}})
    response = post(client, payload)
    assert response.status_code == 200
    assert InboundEvent.objects.get(source="stripe").result["message"].startswith("ignored")


def test_a_saved_method_can_be_refreshed_from_stripe(defaults, fake_stripe):
    customer, method = stripe_customer("pm_ok_sync", exp_month=1, exp_year=2026)
    fake_stripe.add_method("pm_ok_sync", customer=customer.external_id, brand="visa", last4="4242",
                           exp_month=6, exp_year=2030)
    assert refresh_payment_method(method) is True
    method.refresh_from_db()
    assert (method.exp_month, method.exp_year) == (6, 2030)
    assert refresh_payment_method(method) is False


def test_payment_intent_failed_settles_our_pending_attempt_as_declined(defaults, client):
    from billing import services as billing

    customer, method = stripe_customer("pm_ok_pending", brand="mastercard")
    invoice = InvoiceFactory(customer=customer)
    case, _ = open_case(invoice, decline_code="insufficient_funds")
    attempt = billing.new_attempt(invoice, payment_method=method, source="retry", idempotency_key="k-pending")
    attempt.save()  # sent, answer lost: pending
    intent = {"id": "pi_lost", "object": "payment_intent", "amount": 4900, "currency": "usd",
              "customer": customer.external_id, "payment_method": "pm_ok_pending", "status": "requires_payment_method",
              "metadata": {"attempt": str(attempt.pk)},
              "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "do_not_honor",
                                     "network_advice_code": "21"}}
    payload = event("payment_intent.payment_failed", intent, created=int(time.time()))
    assert post(client, payload).status_code == 200
    attempt.refresh_from_db()
    case.refresh_from_db()
    assert (attempt.outcome, attempt.decline_code, attempt.advice_code, attempt.decline_class) == (
        "failed", "do_not_honor", "21", "hard")
    assert case.retry_state == DunningCase.RetryState.NEEDS_PAYMENT_METHOD
    # A later success report for a settled attempt changes nothing.
    ok = event("payment_intent.succeeded", {**intent, "status": "succeeded", "amount_received": 4900},
               created=int(time.time()))
    assert post(client, ok).json()["result"] == f"attempt {attempt.pk} already settled"
    invoice.refresh_from_db()
    assert invoice.amount_paid == 0


def test_the_portal_stripe_page_gets_a_setup_intent_and_reads_the_confirmed_card(defaults, fake_stripe, settings,
                                                                                 django_capture_on_commit_callbacks):
    from billing.gateways import GatewayError
    from dunning.portal import services as portal

    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_local"
    customer, old = stripe_customer("pm_decline_expired_card")
    invoice = InvoiceFactory(customer=customer, amount_due="12.00")
    open_case(invoice, decline_code="expired_card")
    gateway = get_gateway()
    intent = gateway.create_setup_intent(customer)
    assert intent["publishable_key"] == "pk_test_local" and intent["client_secret"].startswith(intent["id"])
    with pytest.raises(GatewayError):
        gateway.card_from_setup_intent(customer, intent["id"])  # not confirmed yet
    fake_stripe.add_method("pm_ok_portal", customer=customer.external_id, brand="visa", last4="1881",
                           exp_month=5, exp_year=2031)
    fake_stripe.confirm_setup_intent(intent["id"], "pm_ok_portal")
    other = CustomerFactory(external_id="cus_someone_else")
    with pytest.raises(GatewayError):
        gateway.card_from_setup_intent(other, intent["id"])
    card = gateway.card_from_setup_intent(customer, intent["id"])
    assert (card.token, card.brand, card.last4, card.exp_month, card.exp_year) == (
        "pm_ok_portal", "visa", "1881", 5, 2031)

    # What the portal view does next: save it and retry (in a worker after the commit); the case
    # leaves "needs payment method".
    with django_capture_on_commit_callbacks(execute=True):
        method = portal.update_payment_method(
            customer, token=card.token, brand=card.brand, last4=card.last4, exp_month=card.exp_month,
            exp_year=card.exp_year, gateway=gateway.name)
    attempts = portal.method_update_attempts(customer, method)
    assert [a.outcome for a in attempts] == ["succeeded"]
    case = DunningCase.objects.get(invoice=invoice)
    assert case.status == DunningCase.Status.RECOVERED
    assert not WorkItem.objects.exclude(status="done").exists()
    assert len(fake_stripe.charges) == 1
