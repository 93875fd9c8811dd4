"""The admin index is a dashboard whose numbers match the changelists they link to."""

from __future__ import annotations

import html
import re
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from dunning.cases import open_case
from dunning.models import WorkItem
from dunning.receipts import mark_paid
from dunning.workqueue import create_work_item
from tests.factories import CampaignFactory, CustomerFactory
from tests.support.cases import make_case, staff_user, utc

pytestmark = pytest.mark.django_db
NOW = utc(2026, 3, 19, 12)  # a Thursday: the week started on Monday 2026-03-16


@pytest.fixture
def cases():
    usd = CustomerFactory(currency="USD")
    eur = CustomerFactory(currency="EUR")
    campaign = CampaignFactory()
    made = [
        # open: at risk 100 + 20.50 USD, 40 EUR (one opened this week)
        make_case(usd, campaign, amount="100", failed_at=utc(2026, 3, 1, 9)),
        make_case(usd, campaign, amount="20.50", failed_at=utc(2026, 3, 17, 9)),
        make_case(eur, campaign, amount="40", failed_at=utc(2026, 3, 18, 9), status="paused"),
        # recovered this week (opened 2 weeks ago), recovered last month, exhausted this week
        make_case(usd, campaign, amount="60", failed_at=utc(2026, 3, 2, 9), status="recovered",
                  closed_at=utc(2026, 3, 16, 8)),
        make_case(usd, campaign, amount="70", failed_at=utc(2026, 1, 20, 9), status="recovered",
                  closed_at=utc(2026, 2, 1, 8)),
        make_case(eur, campaign, amount="10", failed_at=utc(2026, 2, 20, 9), status="exhausted",
                  closed_at=utc(2026, 3, 18, 8)),
        # opened this week and already recovered
        make_case(eur, campaign, amount="15", failed_at=utc(2026, 3, 16, 10), status="recovered",
                  closed_at=utc(2026, 3, 17, 10)),
    ]
    create_work_item(usd, WorkItem.Kind.SUPPORT, "Question", case=made[0])
    create_work_item(usd, WorkItem.Kind.BOUNCED, "Bounced", case=made[1])
    return made


def figures(page: str) -> dict[str, tuple[str, str]]:
    found = re.findall(r'<a href="([^"]+)" data-figure="([^"]+)">(?:<strong>)?([^<]+)', page)
    return {name: (html.unescape(url), text.strip()) for url, name, text in found}


def test_dashboard_numbers_match_the_lists_behind_them(cases, client):
    client.force_login(staff_user("boss", superuser=True))
    with time_machine.travel(NOW, tick=False):
        page = client.get(reverse("admin:index"))
        assert page.status_code == 200
        figs = figures(page.content.decode())
        expected = {"opened": "3", "recovered": "2", "exhausted": "1", "cases-30": "6", "recovered-30": "2",
                    "cases-90": "7", "recovered-90": "3", "work-support": "1", "work-bounced": "1", "work-call": "0"}
        assert {k: figs[k][1] for k in expected} == expected
        for name in expected:
            url, shown = figs[name]
            listed = client.get(url)
            assert listed.status_code == 200, (name, url)
            assert listed.context["cl"].result_count == int(shown), (name, url)
        for currency, amount, text in [("USD", Decimal("120.50"), "$120.50"), ("EUR", Decimal("40"), "€40.00")]:
            url, shown = figs[f"at-risk-{currency}"]
            assert shown == text  # billing.money.format_money, as everywhere in the admin
            listed = client.get(url).context["cl"].queryset
            assert sum(c.invoice.amount_remaining for c in listed) == amount
    assert 'data-chart="revenue-chart"' in page.content.decode()


def test_agent_without_case_access_sees_no_dashboard(client, cases):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("nobody", "n@example.com", "pw", is_staff=True)
    client.force_login(user)
    page = client.get(reverse("admin:index"))
    assert page.status_code == 200 and "cockpit-dashboard" not in page.content.decode()


def test_capped_paginator_stops_counting(client, monkeypatch):
    from core.admin_paging import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    campaign = CampaignFactory()
    customer = CustomerFactory()
    for day in range(1, 6):
        make_case(customer, campaign, amount="10", failed_at=utc(2026, 3, day, 9))
    client.force_login(staff_user("boss", superuser=True))
    page = client.get(reverse("admin:dunning_dunningcase_changelist"))
    assert page.context["cl"].result_count == 4  # counted up to cap + 1, not 5
    assert "more than 3 dunning cases" in page.content.decode()
    filtered = client.get(reverse("admin:dunning_dunningcase_changelist"),
                          {"failed_at__gte": "2026-03-04T00:00:00+00:00"})
    assert filtered.context["cl"].result_count == 2 and "more than" not in filtered.content.decode()


def test_cases_carry_currency_and_recovered_amount_for_the_revenue_chart(client):
    campaign = CampaignFactory()
    from tests.factories import CampaignStepFactory, InvoiceFactory

    CampaignStepFactory(campaign=campaign, position=1, offset_days=1)
    customer = CustomerFactory(currency="EUR")
    case, _ = open_case(InvoiceFactory(customer=customer, amount_due=Decimal("42.50")))
    assert case.currency == "EUR"
    mark_paid(case)
    case.refresh_from_db()
    assert case.status == "recovered" and case.recovered_amount == Decimal("42.50")
    from reports.dashboard import dashboard_data

    series = dashboard_data()["revenue_chart"]["series"]
    assert series["EUR"][-1] == 42.5
