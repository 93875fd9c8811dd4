"""The admin: every model is there, the case page shows its timeline, actions report what they did."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.test import Client

from dunning import engine, links
from dunning.cases import open_case, pause_case
from dunning.models import DunningCase
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(user)
    return client


@pytest.mark.parametrize("url", [
    "/admin/customers/customer/", "/admin/customers/paymentmethod/", "/admin/billing/invoice/",
    "/admin/billing/paymentattempt/", "/admin/dunning/campaign/", "/admin/dunning/dunningcase/",
    "/admin/dunning/caseevent/", "/admin/notifications/messagetemplate/", "/admin/notifications/notification/",
])
def test_changelists_open(staff_client, defaults, url):
    assert staff_client.get(url).status_code == 200


def test_case_page_shows_timeline_attempts_and_messages(staff_client, defaults, clock):
    customer = CustomerFactory(name="Zed Example")
    PaymentMethodFactory(customer=customer, token="tok_insufficient_funds:z")
    case, _ = open_case(InvoiceFactory(customer=customer), decline_code="insufficient_funds")
    clock.tick()
    clock.advance(days=3)
    clock.tick()
    page = staff_client.get(f"/admin/dunning/dunningcase/{case.pk}/change/").content.decode()
    assert "case.opened" in page and "message.queued" in page and "step.retry" in page
    assert "insufficient_funds" in page  # the declined attempt
    assert "first_notice" in page  # the message


def test_case_filters_and_search(staff_client, defaults):
    case, _ = open_case(InvoiceFactory(customer=CustomerFactory(name="Findable Person")))
    base = "/admin/dunning/dunningcase/"
    assert "Findable Person" in staff_client.get(base + "?q=Findable").content.decode()
    assert "Findable Person" not in staff_client.get(base + "?status__exact=recovered").content.decode()
    assert "Findable Person" in staff_client.get(base + "?invoice__currency=USD").content.decode()
    assert "Findable Person" in staff_client.get(f"{base}?campaign__id__exact={case.campaign_id}").content.decode()


def test_admin_actions_report_successes_and_failures(staff_client, defaults, clock):
    active, _ = open_case(InvoiceFactory())
    paused, _ = open_case(InvoiceFactory())
    pause_case(paused)
    response = staff_client.post("/admin/dunning/dunningcase/", {
        "action": "pause", "_selected_action": [active.pk, paused.pk]}, follow=True)
    text = response.content.decode()
    assert "1 case paused." in text
    assert f"#{paused.pk}: Case #{paused.pk} is paused; only active cases can be paused" in text
    active.refresh_from_db()
    assert active.status == DunningCase.Status.PAUSED
    assert active.events.get(kind="case.paused").actor_label == "boss"

    response = staff_client.post("/admin/dunning/dunningcase/", {
        "action": "mark_paid", "_selected_action": [active.pk]}, follow=True)
    assert "1 case marked paid." in response.content.decode()
    assert engine.run_due_steps() == 0


def test_the_admin_is_headed_with_the_merchants_name_not_djangos(staff_client):
    page = staff_client.get("/admin/").content.decode()
    assert "Acme Cloud · Collections" in page and "Dunning back office" in page
    assert "Django administration" not in page and "Django site admin" not in page


def test_admin_has_no_view_site_link_to_a_missing_page(staff_client):
    page = staff_client.get("/admin/").content.decode()
    assert "View site" not in page
    assert Client().get("/").url == "/admin/"  # the address runserver prints leads to the admin


def test_the_favicon_is_served_and_named_by_admin_and_portal_pages(staff_client):
    client = Client()
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response.url == "/static/favicon.svg"
    assert "<svg" in Path(finders.find("favicon.svg")).read_text()  # collected and served as static
    assert 'rel="icon" href="/static/favicon.svg"' in staff_client.get("/admin/").content.decode()
    assert 'rel="icon" href="/static/favicon.svg"' in client.get("/admin/login/").content.decode()
    customer = CustomerFactory()
    assert 'rel="icon" href="/static/favicon.svg"' in client.get(links.portal_url(customer)).content.decode()
