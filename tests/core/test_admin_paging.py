"""Big-table changelists: capped counts, index-backed filter choices, no date_hierarchy scans."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.core.cache import cache
from django.urls import reverse

from billing.models import Invoice
from core.admin_paging import CappedCountPaginator
from dunning.models import CaseEvent, DunningCase
from tests.factories import CampaignFactory, CustomerFactory
from tests.support.cases import make_attempt, make_case, staff_user, utc

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_large_models_use_the_capped_paginator_and_no_full_count():
    for model in (Invoice, DunningCase, CaseEvent):
        model_admin = admin.site._registry[model]
        assert model_admin.paginator is CappedCountPaginator
        assert model_admin.show_full_result_count is False
        assert model_admin.date_hierarchy is None


def test_filters_offer_the_values_in_use_and_filter_by_them(client):
    campaign = CampaignFactory()
    usd, eur = CustomerFactory(currency="USD"), CustomerFactory(currency="EUR")
    a = make_case(usd, campaign, amount="10", failed_at=utc(2026, 3, 1))
    make_case(eur, campaign, amount="20", failed_at=utc(2026, 3, 2))
    make_attempt(a, utc(2026, 3, 1, 12), ok=False)
    client.force_login(staff_user("boss", superuser=True))

    page = client.get(reverse("admin:billing_invoice_changelist"))
    html = page.content.decode()
    assert "?currency=EUR" in html and "?currency=USD" in html
    only_eur = client.get(reverse("admin:billing_invoice_changelist"), {"currency": "EUR"})
    assert [i.currency for i in only_eur.context["cl"].result_list] == ["EUR"]

    cases = client.get(reverse("admin:dunning_dunningcase_changelist"), {"invoice__currency": "USD"})
    assert [c.pk for c in cases.context["cl"].result_list] == [a.pk]

    attempts = client.get(reverse("admin:billing_paymentattempt_changelist"), {"decline_code": "insufficient_funds"})
    assert attempts.context["cl"].result_count == 1
    assert client.get(reverse("admin:dunning_caseevent_changelist")).status_code == 200


def test_notification_filters_need_no_scan_of_the_outbox(client):
    from notifications.models import MessageTemplate, Notification

    MessageTemplate.objects.create(code="reminder", body_text="x")
    customer = CustomerFactory()
    Notification.objects.create(customer=customer, template_code="reminder", dedupe_key="a", locale="it")
    Notification.objects.create(customer=customer, template_code="other", dedupe_key="b", locale="en")
    client.force_login(staff_user("boss", superuser=True))
    url = reverse("admin:notifications_notification_changelist")
    html = client.get(url).content.decode()
    assert "?template_code=reminder" in html and "?locale=it" in html
    assert client.get(url, {"template_code": "reminder"}).context["cl"].result_count == 1
    assert client.get(url, {"locale": "en"}).context["cl"].result_count == 1
