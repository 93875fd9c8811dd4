"""The sandbox gateway's test tokens and card form helper, and the staff view of network counters."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth.models import User

from billing.gateways import ChargeRequest, OutcomeUnknown
from billing.gateways.base import CardDeclined
from billing.gateways.sandbox import CardRejected, SandboxGateway
from billing.models import PaymentAttempt
from tests.factories import InvoiceFactory, PaymentMethodFactory

pytestmark = pytest.mark.django_db


def charge(token: str, key: str = "k1"):
    return SandboxGateway().charge(ChargeRequest(amount=1, currency="USD", payment_method_token=token,
                                                 idempotency_key=key))


@pytest.mark.parametrize(("token", "codes"), [
    ("tok_advice_03:a", ("do_not_honor", "03", "")),
    ("tok_advice_24:a", ("do_not_honor", "24", "")),
    ("tok_network_43:a", ("generic_decline", "", "43")),
    ("tok_lost_card:a", ("lost_card", "", "")),
    ("tok_fraudulent:a", ("fraudulent", "", "")),
    ("tok_authentication_required:a", ("authentication_required", "", "")),
])
def test_declining_tokens_carry_their_codes(token, codes):
    result = charge(token)
    assert not result.succeeded
    assert (result.decline_code, result.advice_code, result.network_code) == codes


def test_timeout_after_charge_keeps_the_first_outcome_for_the_same_key():
    with pytest.raises(OutcomeUnknown):
        charge("tok_timeout_after_charge:x", key="same")
    again = charge("tok_timeout_after_charge:x", key="same")
    assert again.succeeded
    with pytest.raises(OutcomeUnknown):
        charge("tok_timeout:x")


@pytest.mark.parametrize(("number", "brand", "behaviour"), [
    ("4242 4242 4242 4242", "visa", "tok_ok"),
    ("5555-5555-5555-4444", "mastercard", "tok_ok"),
    ("3782 822463 10005", "amex", "tok_ok"),
    ("4000000000000341", "visa", "tok_do_not_honor"),
    ("4000002760003184", "visa", "tok_authentication_required"),
])
def test_tokenize_card_maps_test_numbers_to_tokens_and_keeps_no_number(number, brand, behaviour):
    card = SandboxGateway().tokenize_card(number, 12, 2030, "1234" if brand == "amex" else "123")
    assert card.token.split(":")[0] == behaviour
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == (brand, number[-4:], 12, 2030)
    assert number.replace(" ", "").replace("-", "") not in repr(card)


@pytest.mark.parametrize(("number", "code"), [
    ("4000000000009995", "insufficient_funds"), ("4000000000000069", "expired_card"),
    ("4000000000009979", "stolen_card"), ("4000000000009987", "lost_card"), ("4100000000000019", "fraudulent"),
    ("4000000000000119", "processing_error"), ("5105105105105100", "do_not_honor"),
])
def test_tokenize_card_declines_the_declining_test_cards_at_setup(number, code):
    with pytest.raises(CardDeclined) as declined:
        SandboxGateway().tokenize_card(number, 12, 2030, "123")
    assert declined.value.decline_code == code


@pytest.mark.parametrize(("number", "cvc"), [("4111111111111111", "123"), ("4242424242424242", "12")])
def test_tokenize_card_refuses_unknown_numbers_and_bad_cvc(number, cvc):
    with pytest.raises(CardRejected):
        SandboxGateway().tokenize_card(number, 12, 2030, cvc)


def test_staff_see_network_retry_counters_on_the_payment_method(client, clock):
    card = PaymentMethodFactory(brand="mastercard", token="tok_insufficient_funds:c")
    invoice = InvoiceFactory(customer=card.customer)
    for i in range(3):
        PaymentAttempt.objects.create(invoice=invoice, payment_method=card, amount=1, currency="USD",
                                      outcome="failed", decline_code="insufficient_funds", idempotency_key=f"k{i}",
                                      created_at=clock.now - datetime.timedelta(hours=i * 20))
    admin = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(admin)
    page = client.get(f"/admin/customers/paymentmethod/{card.pk}/change/").content.decode()
    assert "Mastercard, 24 hours: 2 of 10" in page
    assert "Mastercard, 30 days: 3 of 35" in page


def test_admin_pages_for_retry_settings_render(client, defaults):
    from dunning.models import RetryPolicy

    admin = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(admin)
    page = client.get(f"/admin/dunning/campaign/{defaults.pk}/change/")
    assert page.status_code == 200
    assert "Retry timing" in page.content.decode()
    assert RetryPolicy.objects.get(campaign=defaults).local_hour == 10
    for url in ("/admin/integrations/inboundevent/", "/admin/billing/declinerule/?decline_class__exact=hard",
                "/admin/dunning/dunningcase/?retry_state__exact=needs_payment_method",
                "/admin/customers/paymentmethod/?charge_blocked_at__isempty=0"):
        assert client.get(url).status_code == 200, url
