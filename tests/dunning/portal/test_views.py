"""Portal pages through Django's test client: what the customer sees and what each form does."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.gateways import GatewayError, _load
from billing.gateways.sandbox import SandboxGateway, TokenizedCard
from billing.models import Invoice, PaymentAttempt, SandboxCharge
from customers.models import PaymentMethod
from dunning.cases import open_case
from dunning.links import make_token
from dunning.models import DunningCase, WorkItem
from dunning.payments import record_payment
from notifications.models import Notification
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()


def url(name, customer, **kwargs):
    return reverse(f"portal:{name}", kwargs={"token": make_token(customer), **kwargs})


@pytest.fixture
def failing(defaults, clock):
    customer = CustomerFactory(name="Ada", email="ada@example.com", timezone="Asia/Tokyo")
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:ada", last4="9995")
    invoice = InvoiceFactory(customer=customer, amount_due=Decimal("120.00"))
    case, _ = open_case(invoice, decline_code="insufficient_funds")
    return customer, invoice, case


def test_overview_shows_status_invoice_and_what_happens_next(client, failing):
    customer, invoice, case = failing
    body = client.get(url("overview", customer)).content.decode()
    assert "At risk" in body
    assert invoice.number in body and "$120.00" in body
    # The Standard campaign retries on day 3 and suspends on day 14, counted from the failure (T0),
    # shown as calendar days in Tokyo.
    assert "We will try again on March 5, 2026." in body
    assert "your service will be suspended on March 16, 2026" in body
    assert "Visa" in body and "9995" in body and "12/2030" in body
    assert "tok_" not in body  # the gateway token never reaches the page


def test_suspended_and_active_statuses(client, failing):
    customer, invoice, case = failing
    customer.status = "suspended"
    customer.save()
    assert "Suspended" in client.get(url("overview", customer)).content.decode()
    record_payment(invoice, invoice.amount_remaining)
    body = client.get(url("overview", customer)).content.decode()
    assert "Everything is in order." in body and "You have no open invoices" in body


def test_updating_the_card_retries_every_open_invoice_and_shows_each_result(client, failing, caplog,
                                                                            django_capture_on_commit_callbacks):
    customer, invoice, case = failing
    second = InvoiceFactory(customer=customer, amount_due=Decimal("30.00"))
    open_case(second)
    caplog.set_level(logging.DEBUG)
    page = client.get(url("payment_method", customer)).content.decode()
    key = page.split('name="idempotency_key" value="', 1)[1].split('"', 1)[0]
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks() as after_commit:
        response = client.post(url("payment_method", customer), {
            "idempotency_key": key, "card_number": "4242 4242 4242 4242", "exp_month": "4", "exp_year": "2031",
            "cvc": "123"})
    assert response.status_code == 302
    # The retry runs in a worker after the commit: until it lands, each invoice is shown as processing.
    waiting = client.get(response["Location"]).content.decode()
    assert waiting.count("Processing") == 2 and invoice.number in waiting and second.number in waiting
    assert "Paid" not in waiting and not SandboxCharge.objects.exists()
    with CaptureQueriesContext(connection) as worker_queries:
        for callback in after_commit:
            callback()
    queries.captured_queries.extend(worker_queries.captured_queries)
    result = client.get(response["Location"]).content.decode()
    assert "Processing" not in result
    assert result.count("Paid") >= 2 and invoice.number in result and second.number in result
    invoice.refresh_from_db()
    case.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID and case.status == DunningCase.Status.RECOVERED
    method = customer.default_payment_method
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == ("visa", "4242", 4, 2031)
    assert method.token.startswith("tok_ok:")
    assert PaymentMethod.objects.filter(customer=customer, is_default=True).count() == 1
    # PCI: the card number and CVC are in no query and no log line.
    assert not any("4242424242424242" in q["sql"] or "4242 4242" in q["sql"] for q in queries.captured_queries)
    assert "4242424242424242" not in caplog.text and "4242 4242" not in caplog.text
    # The same form submitted again charges nothing more and makes no second method.
    again = client.post(url("payment_method", customer), {
        "idempotency_key": key, "card_number": "4242424242424242", "exp_month": "4", "exp_year": "2031",
        "cvc": "123"})
    assert again["Location"] == response["Location"]
    assert PaymentMethod.objects.filter(customer=customer).count() == 2
    assert SandboxCharge.objects.filter(succeeded=True).count() == 2


def test_a_card_declined_at_setup_is_not_saved_and_the_customer_is_told_why(client, failing):
    customer, invoice, case = failing
    default = customer.default_payment_method
    response = client.post(url("payment_method", customer), {
        "idempotency_key": "k", "card_number": "4000000000009995", "exp_month": "4", "exp_year": "2031",
        "cvc": "123"})
    body = response.content.decode()
    assert response.status_code == 200
    assert "Your bank declined this card, so it was not saved" in body
    assert list(customer.payment_methods.all()) == [default] and customer.default_payment_method == default
    assert not SandboxCharge.objects.exists()
    expired = client.post(url("payment_method", customer), {
        "idempotency_key": "k2", "card_number": "4000000000000069", "exp_month": "4", "exp_year": "2031",
        "cvc": "123"})
    assert "This card has expired, so it was not saved" in expired.content.decode()
    assert customer.payment_methods.count() == 1


def test_a_card_that_declines_only_when_charged_is_saved_and_the_result_says_not_paid(
        client, failing, django_capture_on_commit_callbacks):
    customer, invoice, case = failing
    with django_capture_on_commit_callbacks(execute=True):  # the retry runs in a worker after the commit
        response = client.post(url("payment_method", customer), {
            "idempotency_key": "k", "card_number": "4000000000000341", "exp_month": "4", "exp_year": "2031",
            "cvc": "123"})
    body = client.get(response["Location"]).content.decode()
    assert "Not paid" in body and "declined by your bank" in body
    case.refresh_from_db()
    assert case.status == DunningCase.Status.ACTIVE


def test_card_submissions_are_limited_per_customer_and_nothing_reaches_the_gateway(client, failing, settings,
                                                                                   monkeypatch):
    settings.PORTAL_CARD_LIMIT = 3
    customer, invoice, case = failing
    tokenized = []
    real = SandboxGateway.tokenize_card
    monkeypatch.setattr(SandboxGateway, "tokenize_card",
                        staticmethod(lambda *a: tokenized.append(a) or real(*a)))
    for i in range(3):
        allowed = client.post(url("payment_method", customer), {
            "idempotency_key": f"k{i}", "card_number": "4000000000009995", "exp_month": "4",
            "exp_year": "2031", "cvc": "123"})
        assert allowed.status_code == 200 and "so it was not saved" in allowed.content.decode()
    refused = client.post(url("payment_method", customer), {
        "idempotency_key": "k9", "card_number": "4242424242424242", "exp_month": "4", "exp_year": "2031",
        "cvc": "123"})
    assert refused.status_code == 429
    assert "You have tried several cards in a short time" in refused.content.decode()
    assert len(tokenized) == 3 and not SandboxCharge.objects.exists()
    assert customer.payment_methods.count() == 1


def test_card_submissions_are_limited_per_client_address_across_customers(client, failing, settings):
    settings.PORTAL_CARD_LIMIT_PER_ADDRESS = 2
    customer, invoice, case = failing
    others = [CustomerFactory() for _ in range(3)]
    codes = [client.post(url("payment_method", other), {
        "idempotency_key": "k", "card_number": "4242424242424242", "exp_month": "4", "exp_year": "2031",
        "cvc": "123"}).status_code for other in others]
    assert codes == [302, 302, 429]
    assert PaymentMethod.objects.filter(customer=others[2]).count() == 0


def test_the_card_limit_message_is_translated(client, failing, settings):
    settings.PORTAL_CARD_LIMIT = 1
    customer, invoice, case = failing
    customer.locale = "es"
    customer.save(update_fields=["locale"])
    post = {"idempotency_key": "k", "card_number": "4000000000009995", "exp_month": "4", "exp_year": "2031",
            "cvc": "123"}
    first = client.post(url("payment_method", customer), post).content.decode()
    assert "Su banco ha rechazado esta tarjeta" in first
    refused = client.post(url("payment_method", customer), {**post, "idempotency_key": "k2"})
    assert "Ha probado varias tarjetas" in refused.content.decode()


def test_an_unknown_card_number_is_refused_and_never_written_back_into_the_page(client, failing):
    customer, invoice, case = failing
    response = client.post(url("payment_method", customer), {
        "idempotency_key": "k", "card_number": "4111111111111111", "exp_month": "4", "exp_year": "2031",
        "cvc": "123"})
    body = response.content.decode()
    assert response.status_code == 200 and "This card was declined" in body
    assert "4111111111111111" not in body and 'value="123"' not in body
    assert customer.payment_methods.count() == 1


def test_pay_now_charges_once_even_when_the_form_is_submitted_twice(client, failing):
    customer, invoice, case = failing
    PaymentMethod.objects.filter(customer=customer).update(is_default=False)
    PaymentMethodFactory(customer=customer, token="tok_ok:ada")
    pay = url("pay", customer, invoice_id=invoice.pk)
    first = client.post(pay, {"idempotency_key": "form-1"})
    second = client.post(pay, {"idempotency_key": "form-1"})
    assert first.status_code == second.status_code == 302
    assert PaymentAttempt.objects.filter(invoice=invoice, source="portal").count() == 1
    assert SandboxCharge.objects.count() == 1
    # A second, different form after the invoice was paid is refused without charging.
    third = client.post(pay, {"idempotency_key": "form-2"}, follow=True)
    assert "nothing left to pay" in third.content.decode()
    assert SandboxCharge.objects.count() == 1
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    body = client.get(url("invoice", customer, invoice_id=invoice.pk)).content.decode()
    assert "Paid" in body


def test_pay_now_with_a_declining_card_says_so(client, failing):
    customer, invoice, case = failing
    response = client.post(url("pay", customer, invoice_id=invoice.pk), {"idempotency_key": "a"}, follow=True)
    assert "declined by your bank" in response.content.decode()
    assert "insufficient" not in response.content.decode()


def test_contact_support_reaches_the_work_queue_and_acknowledges_by_email(client, failing):
    customer, invoice, case = failing
    response = client.post(url("support", customer), {"message": "I was charged twice last month"}, follow=True)
    assert "your message was sent" in response.content.decode()
    item = WorkItem.objects.get(kind=WorkItem.Kind.SUPPORT)
    assert item.customer == customer and item.case == case and "charged twice" in item.body
    ack = Notification.objects.get(template_code="support_ack")
    assert ack.recipient == "ada@example.com"
    from notifications import services as outbox

    outbox.send_queued()
    from django.core import mail

    assert any(m.subject == "We received your message" for m in mail.outbox)


def test_preferences_change_language_and_opt_outs_and_mention_legal_notices(client, failing):
    customer, invoice, case = failing
    page = client.get(url("preferences", customer)).content.decode()
    assert "notices the law requires" in page
    response = client.post(url("preferences", customer), {"locale": "es", "opt_out_email": "on"})
    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.locale == "es" and customer.opt_out_email and not customer.opt_out_sms
    assert client.get(url("overview", customer))["Content-Language"] == "es"


def test_inapp_messages_show_until_dismissed(client, failing):
    customer, invoice, case = failing
    note = Notification.objects.create(customer=customer, channel="inapp", recipient=f"customer:{customer.pk}",
                                       template_code="reminder", subject="Card problem",
                                       body_text="Please update your card", status="sent", dedupe_key="n1")
    other = CustomerFactory()
    assert "Card problem" in client.get(url("overview", customer)).content.decode()
    note.refresh_from_db()
    assert note.read_at is not None
    # Nobody else can dismiss it.
    assert client.post(url("dismiss", other, message_id=note.pk)).status_code == 404
    client.post(url("dismiss", customer, message_id=note.pk))
    note.refresh_from_db()
    assert note.dismissed_at is not None
    assert "Card problem" not in client.get(url("overview", customer)).content.decode()


def test_a_payment_method_result_of_another_customer_is_a_404(client, failing):
    customer, invoice, case = failing
    other_method = PaymentMethodFactory()
    assert client.get(url("payment_method_result", customer, method_id=other_method.pk)).status_code == 404


class FakeStripeGateway(SandboxGateway):
    """Stands in for the Stripe gateway's portal interface: SetupIntent in, saved card out."""

    name = "stripe"

    def create_setup_intent(self, customer):
        return {"client_secret": "seti_1_secret_2", "publishable_key": "pk_test_1"}

    def card_from_setup_intent(self, customer, setup_intent_id):
        if setup_intent_id != "seti_1":
            raise GatewayError("unknown setup intent")
        return TokenizedCard("tok_ok:pm_1", "visa", "4242", 1, 2032)


def test_stripe_configured_uses_elements_and_extends_the_policy(client, failing, settings,
                                                                django_capture_on_commit_callbacks):
    settings.PAYMENT_GATEWAY = "tests.dunning.portal.test_views.FakeStripeGateway"
    _load.cache_clear()
    customer, invoice, case = failing
    try:
        response = client.get(url("payment_method", customer))
        body = response.content.decode()
        assert 'src="https://js.stripe.com/v3/"' in body and 'name="card_number"' not in body
        assert "https://js.stripe.com" in response["Content-Security-Policy"]
        with django_capture_on_commit_callbacks(execute=True):  # the retry runs in a worker after the commit
            saved = client.post(url("payment_method", customer), {"setup_intent": "seti_1"})
        assert saved.status_code == 302
        method = customer.default_payment_method
        assert (method.gateway, method.token, method.last4) == ("stripe", "tok_ok:pm_1", "4242")
        invoice.refresh_from_db()
        assert invoice.status == Invoice.Status.PAID
        refused = client.post(url("payment_method", customer), {"setup_intent": "seti_forged"}, follow=True)
        assert "This card was declined" in refused.content.decode()
    finally:
        _load.cache_clear()


def test_the_acknowledgement_is_sent_in_the_customers_language(client, failing):
    from django.core import mail

    from notifications import services as outbox

    customer, invoice, case = failing
    customer.locale = "ja"
    customer.save()
    client.post(url("support", customer), {"message": "請求について質問があります"})
    outbox.send_queued()
    ack = [m for m in mail.outbox if m.subject == "お問い合わせを受け付けました"]
    assert len(ack) == 1 and "/portal/" in ack[0].body


def test_a_card_form_submitted_while_its_first_submit_is_still_running_does_nothing(client, failing):
    customer, invoice, case = failing
    cache.add(f"pm-form:{customer.pk}:same", "running")
    response = client.post(url("payment_method", customer), {
        "idempotency_key": "same", "card_number": "4242424242424242", "exp_month": "4", "exp_year": "2031",
        "cvc": "123"}, follow=True)
    assert "A payment is being processed." in response.content.decode()
    assert customer.payment_methods.count() == 1 and not SandboxCharge.objects.exists()
