"""Campaign preview: the exact timeline, in the customer's zone, with quiet hours and caps applied."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest
from django.urls import reverse

from dunning.cases import open_case
from dunning.models import CampaignStep
from dunning.preview import preview
from tests.factories import CampaignFactory, CampaignStepFactory, CustomerFactory, InvoiceFactory
from tests.support.cases import staff_user

pytestmark = pytest.mark.django_db
NY = zoneinfo.ZoneInfo("America/New_York")


@pytest.fixture
def campaign():
    c = CampaignFactory(name="Draft", active=False)
    for position, day, action in [(1, 0, "email"), (2, 1, "retry"), (3, 1, "email"), (4, 2, "email"),
                                  (5, 3, "email"), (6, 14, "suspend")]:
        CampaignStepFactory(campaign=c, position=position, offset_days=day, action=action,
                            template_code="" if action in ("retry", "suspend") else "reminder")
    return c


def test_timeline_in_customer_zone_with_quiet_hours_and_cap(campaign, clock):
    # Now is 2026-03-02 10:00 UTC = 05:00 in New York: inside quiet hours (21:00-08:00).
    customer = CustomerFactory(timezone="America/New_York")
    rows = preview(campaign, customer)
    when = [(r.step.position, r.at.astimezone(NY).strftime("%m-%d %H:%M"), r.note) for r in rows]
    assert when == [
        (1, "03-02 08:00", "moved out of quiet hours"),
        (2, "03-03 05:00", "skipped: no payment method on file"),  # retries are not messages
        (3, "03-03 08:00", "moved out of quiet hours"),
        (4, "03-04 08:00", "moved out of quiet hours"),
        # Fourth message in 7 days: deferred until the first leaves the window (local wall clock, after DST).
        (5, "03-09 08:00", "moved out of quiet hours; deferred: at most 3 messages per 7 days"),
        (6, "03-16 06:00", ""),  # suspension without a message is not a contact
    ]
    assert rows[0].at.tzinfo == customer.tz


def test_preview_for_an_open_case_uses_its_failure_time(campaign, clock):
    live = CampaignFactory(name="Live")
    CampaignStepFactory(campaign=live, position=1)
    customer = CustomerFactory(timezone="Europe/Rome")
    case, _ = open_case(InvoiceFactory(customer=customer),
                                 failed_at=clock.now - datetime.timedelta(days=2))
    rows = preview(campaign, customer, case=case)
    assert rows[0].planned_at == case.failed_at and rows[0].past
    assert not rows[-1].past


def test_preview_page_in_the_admin(campaign, clock, client):
    customer = CustomerFactory(timezone="America/New_York", name="Zoe")
    client.force_login(staff_user("manager", "Collections manager"))
    change = client.get(reverse("admin:dunning_campaign_change", args=[campaign.pk])).content.decode()
    url = reverse("admin:dunning_campaign_preview", args=[campaign.pk])
    assert url in change
    page = client.get(url, {"customer": customer.pk}).content.decode()
    assert "America/New_York" in page and "Zoe" in page and "not active yet" in page
    assert "Mon 2026-03-09 08:00 EDT" in page and "deferred" in page
    assert CampaignStep.Action.CALL.label in CampaignStep.Action.labels
