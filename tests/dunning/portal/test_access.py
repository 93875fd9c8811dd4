"""Portal links: signed, expiring, revocable, scoped to one customer; token-less pages rate limited."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from dunning.links import make_token, portal_url
from dunning.portal.access import TokenProblem, read_token
from notifications import services as outbox
from notifications.models import Notification
from tests.factories import CustomerFactory, InvoiceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


def overview(token):
    return reverse("portal:overview", kwargs={"token": token})


def test_a_link_opens_the_account_it_was_made_for(client):
    customer = CustomerFactory(name="Ada")
    assert read_token(make_token(customer)) == customer
    response = client.get(overview(make_token(customer)))
    assert response.status_code == 200
    assert "Hello, Ada" in response.content.decode()
    assert response["Referrer-Policy"] == "same-origin"
    assert "no-store" in response["Cache-Control"]


def test_portal_url_points_at_the_portal():
    customer = CustomerFactory.build(pk=7)
    assert "/portal/" in portal_url(customer) and portal_url(customer, "preferences").endswith("/preferences/")


def test_a_tampered_link_shows_a_friendly_page_in_the_browser_language(client):
    customer = CustomerFactory(locale="it")
    token = make_token(customer)
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    with pytest.raises(TokenProblem) as problem:
        read_token(tampered)
    assert problem.value.reason == "invalid" and problem.value.customer is None
    response = client.get(overview(tampered), HTTP_ACCEPT_LANGUAGE="es")
    assert response.status_code == 403
    assert response["Content-Language"] == "es"
    assert 'name="email"' in response.content.decode()


@override_settings(PORTAL_LINK_MAX_AGE_DAYS=14)
def test_a_link_expires_after_the_configured_days_and_the_page_speaks_the_customers_language(client, clock):
    customer = CustomerFactory(locale="ja")
    token = make_token(customer)
    clock.advance(days=13, hours=23)
    assert client.get(overview(token)).status_code == 200
    clock.advance(hours=2)
    with pytest.raises(TokenProblem) as problem:
        read_token(token)
    assert problem.value.reason == "expired" and problem.value.customer == customer
    response = client.get(overview(token), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 403
    assert response["Content-Language"] == "ja"
    body = response.content.decode()
    assert 'name="token"' in body and 'name="email"' not in body


@override_settings(PORTAL_LINK_MAX_AGE_DAYS=2)
def test_expiry_is_configurable(clock):
    customer = CustomerFactory()
    token = make_token(customer)
    clock.advance(days=2, minutes=1)
    with pytest.raises(TokenProblem):
        read_token(token)


def test_staff_revoke_every_link_of_a_customer(admin_client):
    customer = CustomerFactory()
    old = make_token(customer)
    other = CustomerFactory()
    other_token = make_token(other)
    response = admin_client.post(reverse("admin:customers_customer_changelist"),
                                 {"action": "revoke_portal_links", "_selected_action": [customer.pk]})
    assert response.status_code == 302
    with pytest.raises(TokenProblem) as problem:
        read_token(old)
    assert problem.value.reason == "revoked"
    customer.refresh_from_db()
    assert read_token(make_token(customer)) == customer  # new links work
    assert read_token(other_token) == other  # nobody else is affected


def test_links_survive_a_key_rotation_through_secret_key_fallbacks():
    customer = CustomerFactory()
    with override_settings(SECRET_KEY="old-key-" + "a" * 50):
        token = make_token(customer)
    with override_settings(SECRET_KEY="new-key-" + "b" * 50, SECRET_KEY_FALLBACKS=["old-key-" + "a" * 50]):
        assert read_token(token) == customer
    with override_settings(SECRET_KEY="new-key-" + "b" * 50, SECRET_KEY_FALLBACKS=[]):
        with pytest.raises(TokenProblem):
            read_token(token)


def test_another_customers_invoice_is_a_404(client):
    mine = CustomerFactory()
    theirs = InvoiceFactory()
    token = make_token(mine)
    assert client.get(reverse("portal:invoice", kwargs={"token": token, "invoice_id": theirs.pk})).status_code == 404
    assert client.post(reverse("portal:pay", kwargs={"token": token, "invoice_id": theirs.pk}),
                       {"idempotency_key": "k1"}).status_code == 404
    own = InvoiceFactory(customer=mine)
    assert client.get(reverse("portal:invoice", kwargs={"token": token, "invoice_id": own.pk})).status_code == 200


def test_asking_for_a_link_never_reveals_whether_the_address_exists(client):
    CustomerFactory(email="known@example.com")
    url = reverse("portal:request_link")
    known = client.post(url, {"email": "known@example.com"})
    unknown = client.post(url, {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.content.decode().replace("known@", "") == unknown.content.decode().replace("nobody@", "")
    sent = Notification.objects.filter(template_code="portal_link")
    assert [n.recipient for n in sent] == ["known@example.com"]


def test_an_expired_link_offers_a_fresh_one_to_the_address_on_file(client, clock):
    customer = CustomerFactory(email="ada@example.com")
    token = make_token(customer)
    clock.advance(days=30)
    response = client.post(reverse("portal:request_link"), {"token": token})
    assert response.status_code == 200
    note = Notification.objects.get(template_code="portal_link")
    assert note.recipient == "ada@example.com"
    call_command("load_defaults", verbosity=0)
    outbox.send_queued()
    (message,) = [m for m in mail.outbox if m.to == ["ada@example.com"]]
    link = re.search(r"/portal/([^/\s]+)/", message.body).group(1)
    assert read_token(link) == customer  # a fresh link, minted when the email was sent


@override_settings(PORTAL_RATE_LIMIT=3)
def test_token_less_pages_are_rate_limited_per_client(client):
    url = reverse("portal:request_link")
    codes = [client.post(url, {"email": f"x{i}@example.com"}).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    # Another client address is not affected.
    assert client.post(url, {"email": "y@example.com"}, REMOTE_ADDR="10.0.0.9").status_code == 200


@override_settings(PORTAL_RATE_LIMIT=3)
def test_the_rate_limit_reads_x_forwarded_for_only_behind_declared_proxies(client, settings):
    url = reverse("portal:request_link")

    def codes(addresses):
        return [client.post(url, {"email": "x@example.com"}, REMOTE_ADDR="10.0.0.2",
                            HTTP_X_FORWARDED_FOR=f"{a}").status_code for a in addresses]

    # NUM_PROXIES=0 (the default): whatever the client writes in X-Forwarded-For, it is one address.
    assert codes(f"198.51.100.{n}" for n in range(4)) == [200, 200, 200, 429]
    cache.clear()
    # One proxy that appends the address it saw: its entry is the client, anything before it is not.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert codes(f"203.0.113.{n}, 198.51.100.1" for n in range(4)) == [200, 200, 200, 429]
    assert codes(["198.51.100.2"]) == [200]
    # Something that is not an address (a misconfigured proxy): counted under REMOTE_ADDR instead.
    assert codes(["not-an-address"] * 4) == [200, 200, 200, 429]


def test_one_address_gets_at_most_three_links_an_hour(client, clock):
    CustomerFactory(email="ada@example.com")
    url = reverse("portal:request_link")
    for i in range(6):
        response = client.post(url, {"email": "ada@example.com"}, REMOTE_ADDR=f"10.0.0.{i}")
        assert response.status_code == 200  # the answer never changes
        clock.advance(minutes=2)
    assert Notification.objects.filter(template_code="portal_link").count() == 3


def test_forms_need_csrf():
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    customer = CustomerFactory()
    response = strict.post(reverse("portal:support", kwargs={"token": make_token(customer)}),
                           {"message": "hello there"})
    assert response.status_code == 403


def test_pages_send_a_strict_content_security_policy(client):
    customer = CustomerFactory()
    response = client.get(overview(make_token(customer)))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "stripe" not in policy


def test_a_token_is_not_valid_for_another_salt():
    from django.core import signing

    customer = CustomerFactory()
    forged = signing.dumps({"c": customer.pk, "v": 0}, salt="something.else", compress=True)
    with pytest.raises(TokenProblem):
        read_token(forged)


@override_settings(PORTAL_RATE_LIMIT=2)
def test_guessing_tokens_is_rate_limited(client):
    codes = [client.get(overview(f"guess{i}:abc:def")).status_code for i in range(8)]
    assert codes == [403] * 6 + [429] * 2
    # A good link still works from another address.
    customer = CustomerFactory()
    assert client.get(overview(make_token(customer)), REMOTE_ADDR="10.1.1.1").status_code == 200


def test_the_new_link_page_can_be_opened_directly(client):
    response = client.get(reverse("portal:request_link"), HTTP_ACCEPT_LANGUAGE="uk")
    body = response.content.decode()
    assert response.status_code == 200 and 'name="email"' in body
    assert "Отримати посилання на обліковий запис" in body
