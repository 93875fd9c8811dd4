"""Portal links shown to staff (issue 13): a working link only with "send portal link", minted in the
staff member's name; what is done through it is logged under that name; previews never carry one."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from dunning.cases import open_case
from dunning.links import HIDDEN_TOKEN, make_token, staff_link
from dunning.models import CaseEvent
from dunning.portal.access import TokenProblem, read_link
from notifications.models import MessageTemplate, Notification
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory
from tests.support.cases import staff_user

pytestmark = pytest.mark.django_db

TOKEN_IN_URL = re.compile(r"/portal/([^/\s\"'<>&]+)/")


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()


@pytest.fixture
def world(defaults, clock):
    """A case whose first notice went out by email, with the customer's own link in it."""
    customer = CustomerFactory(name="Ada", email="ada@example.com", locale="en")
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:ada", last4="9995")
    invoice = InvoiceFactory(customer=customer, amount_due=Decimal("120.00"))
    case, _ = open_case(invoice, decline_code="insufficient_funds")
    clock.tick()
    message = Notification.objects.get(reference=f"case:{case.pk}", channel="email", status="sent")
    (sent_token,) = set(TOKEN_IN_URL.findall(message.body_text))
    assert read_link(sent_token).customer == customer and read_link(sent_token).staff is None
    return {"customer": customer, "invoice": invoice, "case": case, "message": message, "sent_token": sent_token}


def working_links(html: str) -> list:
    """Every portal link in a page that the portal would accept."""
    links = []
    for token in set(TOKEN_IN_URL.findall(html)):
        try:
            links.append(read_link(token))
        except TokenProblem:
            pass
    return links


def as_role(client, username: str, group: str):
    user = staff_user(username, group)
    client.force_login(user)
    return user


def case_page_link(client, case) -> str:
    page = client.get(reverse("admin:dunning_dunningcase_change", args=[case.pk])).content.decode()
    return re.search(r'value="([^"]*/portal/[^"]+)"', page).group(1)


def test_only_agents_and_managers_may_send_portal_links():
    def holders(name):
        return Group.objects.get(name=name).permissions.filter(
            content_type__app_label="customers", codename="send_portal_link").exists()

    assert holders("Collections agent") and holders("Collections manager")
    assert not holders("Auditor")


@pytest.mark.parametrize("group", ["Auditor", "Collections manager"])
def test_template_previews_and_tests_carry_a_placeholder_not_a_working_link(client, world, group):
    as_role(client, "staffer", group)
    template = MessageTemplate.objects.get(code="reminder", channel="email", locale="en")
    form = {"code": template.code, "channel": "email", "locale": "en", "subject": template.subject,
            "body_text": template.body_text, "body_html": template.body_html,
            "preview_reference": f"case:{world['case'].pk}"}
    body = client.post(reverse("admin:notifications_messagetemplate_preview"), form).content.decode()
    assert "Ada" in body and world["invoice"].number in body  # the case's own data
    assert working_links(body) == []
    assert make_token(world["customer"]) not in body  # time is frozen: this is the link a message would carry
    assert "/portal/preview-link-not-valid/" in body and "link disabled in preview" in body

    client.post(reverse("admin:notifications_messagetemplate_send_test"), form)
    (test_mail,) = [m for m in mail.outbox if m.to == ["staffer@example.com"]]
    assert "/portal/preview-link-not-valid/" in test_mail.body
    assert working_links(test_mail.body + test_mail.alternatives[0][0]) == []


def test_an_auditor_sees_no_working_link_in_the_outbox_or_on_the_case(client, world):
    auditor = as_role(client, "auditor", "Auditor")
    page = client.get(reverse("admin:notifications_notification_change", args=[world["message"].pk]))
    html = page.content.decode()
    assert page.status_code == 200 and "Ada" in html
    assert world["sent_token"] not in html
    assert working_links(html) == []
    assert f"/portal/{HIDDEN_TOKEN}/" in html  # where the link was, in the text and the HTML body

    case_page = client.get(reverse("admin:dunning_dunningcase_change", args=[world["case"].pk])).content.decode()
    assert world["invoice"].number in case_page
    assert "portal link" not in case_page.lower() and working_links(case_page) == []
    with pytest.raises(PermissionDenied):
        staff_link(world["customer"], auditor)


def test_an_agent_sees_a_working_link_minted_in_their_name(client, world):
    agent = as_role(client, "agent", "Collections agent")
    html = client.get(reverse("admin:notifications_notification_change", args=[world["message"].pk])).content.decode()
    assert world["sent_token"] not in html  # never the customer's own credential
    links = working_links(html)
    assert links and all(link.customer == world["customer"] and link.staff == agent for link in links)
    assert HIDDEN_TOKEN not in html

    link = read_link(TOKEN_IN_URL.search(case_page_link(client, world["case"])).group(1))
    assert (link.customer, link.staff) == (world["customer"], agent)


def test_portal_actions_through_a_staff_link_are_logged_under_the_staff_member(client, world):
    agent = as_role(client, "agent", "Collections agent")
    base = case_page_link(client, world["case"])
    client.logout()  # whoever follows the link, nobody is logged in to the admin
    case, invoice = world["case"], world["invoice"]

    pay_page = client.get(f"{base}invoices/{invoice.pk}/").content.decode()
    key = pay_page.split('name="idempotency_key" value="', 1)[1].split('"', 1)[0]
    assert client.post(f"{base}invoices/{invoice.pk}/pay/", {"idempotency_key": key}).status_code == 302
    assert client.post(f"{base}preferences/", {"locale": "es", "opt_out_email": "", "opt_out_sms": "on"}
                       ).status_code == 302
    assert client.post(f"{base}support/", {"message": "Please call me back"}).status_code == 302
    card_page = client.get(f"{base}payment-method/").content.decode()
    key = card_page.split('name="idempotency_key" value="', 1)[1].split('"', 1)[0]
    assert client.post(f"{base}payment-method/", {
        "idempotency_key": key, "card_number": "4242 4242 4242 4242", "exp_month": "4", "exp_year": "2031",
        "cvc": "123"}).status_code == 302

    world["customer"].refresh_from_db()
    assert world["customer"].locale == "es" and world["customer"].opt_out_sms
    kinds = ["payment.portal_pay", "customer.preferences", "workitem.created", "customer.payment_method_updated"]
    for kind in kinds:
        event = CaseEvent.objects.get(case=case, kind=kind)
        assert (event.actor, event.actor_label) == (agent, "agent"), kind
    for kind in ("payment.portal_pay", "customer.preferences", "customer.payment_method_updated"):
        assert CaseEvent.objects.get(case=case, kind=kind).payload["via"] == "staff-minted portal link"
    assert not CaseEvent.objects.filter(case=case, actor_label="portal").exists()


def test_the_customers_own_link_is_still_logged_as_the_customer(client, world):
    base = reverse("portal:overview", kwargs={"token": world["sent_token"]})
    assert client.post(f"{base}preferences/", {"locale": "it", "opt_out_sms": "on"}).status_code == 302
    event = CaseEvent.objects.get(case=world["case"], kind="customer.preferences")
    assert (event.actor, event.actor_label) == (None, "portal")
    assert "via" not in event.payload and event.payload["opt_out_sms"] is True


def test_a_staff_link_stops_working_when_its_maker_may_no_longer_send_links(client, world):
    agent = as_role(client, "agent", "Collections agent")
    base = case_page_link(client, world["case"])
    client.logout()
    assert client.get(base).status_code == 200
    agent.groups.clear()
    response = client.get(base)
    assert response.status_code == 403 and "Hello, Ada" not in response.content.decode()
    assert client.get(reverse("portal:overview", kwargs={"token": world["sent_token"]})).status_code == 200
