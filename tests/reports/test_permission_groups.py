"""The three staff roles, driven through the admin with the test client."""

from __future__ import annotations

import pytest
from django.urls import reverse

from dunning.cases import open_case
from dunning.models import Campaign, CaseEvent, DunningCase, WorkItem
from dunning.workqueue import create_work_item
from tests.factories import CampaignFactory, CampaignStepFactory, CustomerFactory, InvoiceFactory
from tests.support.cases import staff_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    campaign = CampaignFactory(name="Standard")
    CampaignStepFactory(campaign=campaign, position=1, offset_days=1)
    customer = CustomerFactory()
    case, _ = open_case(InvoiceFactory(customer=customer))
    item, _ = create_work_item(customer, WorkItem.Kind.CALL, "Call them", case=case)
    return {"campaign": campaign, "case": case, "item": item}


def campaign_post(campaign: Campaign, **changes) -> dict:
    step = campaign.steps.get()
    data = {
        "name": campaign.name, "priority": campaign.priority, "currency": "", "segment": "", "countries": "",
        "payment_method_kinds": "", "active": "on",
        "steps-TOTAL_FORMS": "1", "steps-INITIAL_FORMS": "1", "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000", "steps-0-id": step.pk, "steps-0-campaign": campaign.pk,
        "steps-0-position": "1", "steps-0-offset_days": "1", "steps-0-offset_hours": "0",
        "steps-0-action": "email", "steps-0-template_code": "reminder", "steps-0-channels": '["email"]',
        "variants-TOTAL_FORMS": "0", "variants-INITIAL_FORMS": "0", "variants-MIN_NUM_FORMS": "0",
        "variants-MAX_NUM_FORMS": "1000",
        "retry_policy-TOTAL_FORMS": "0", "retry_policy-INITIAL_FORMS": "0", "retry_policy-MIN_NUM_FORMS": "0",
        "retry_policy-MAX_NUM_FORMS": "1",
        "fee_policy-TOTAL_FORMS": "0", "fee_policy-INITIAL_FORMS": "0", "fee_policy-MIN_NUM_FORMS": "0",
        "fee_policy-MAX_NUM_FORMS": "1", "steps-0-audience": "primary", "steps-0-escalate_to": "",
    }
    data.update(changes)
    return data


def pause_via_admin(client, case):
    return client.post(reverse("admin:dunning_dunningcase_changelist"),
                       {"action": "pause", "_selected_action": [case.pk]}, follow=True)


def test_groups_exist_after_migrate():
    from django.contrib.auth.models import Group

    assert set(Group.objects.values_list("name", flat=True)) >= {"Collections agent", "Collections manager", "Auditor"}


def test_collections_agent_works_cases_but_cannot_edit_campaigns(client, world):
    agent = staff_user("agent", "Collections agent")
    client.force_login(agent)
    assert client.get(reverse("admin:dunning_dunningcase_changelist")).status_code == 200
    pause_via_admin(client, world["case"])
    world["case"].refresh_from_db()
    assert world["case"].status == DunningCase.Status.PAUSED
    event = CaseEvent.objects.get(case=world["case"], kind="case.paused")
    assert (event.actor, event.actor_label) == (agent, "agent")
    # Work items: can assign to themselves.
    client.post(reverse("admin:dunning_workitem_changelist"),
                {"action": "assign_to_me", "_selected_action": [world["item"].pk]})
    world["item"].refresh_from_db()
    assert world["item"].assigned_to == agent
    # Campaigns: can look, cannot change or add; no reports.
    campaign = world["campaign"]
    assert client.get(reverse("admin:dunning_campaign_change", args=[campaign.pk])).status_code == 200
    assert client.post(reverse("admin:dunning_campaign_change", args=[campaign.pk]),
                       campaign_post(campaign, name="Hacked")).status_code == 403
    assert client.get(reverse("admin:dunning_campaign_add")).status_code == 403
    assert client.get(reverse("admin:notifications_messagetemplate_add")).status_code == 403
    campaign.refresh_from_db()
    assert campaign.name == "Standard"
    assert client.get(reverse("reports:index")).status_code == 403


def test_collections_manager_edits_campaigns_and_templates_and_exports(client, world):
    client.force_login(staff_user("manager", "Collections manager"))
    campaign = world["campaign"]
    response = client.post(reverse("admin:dunning_campaign_change", args=[campaign.pk]),
                           campaign_post(campaign, name="Standard v2", countries="US, CA"))
    assert response.status_code == 302, response.content.decode()[:2000]
    campaign.refresh_from_db()
    assert (campaign.name, campaign.countries) == ("Standard v2", "US, CA")
    assert client.get(reverse("admin:notifications_messagetemplate_add")).status_code == 200
    pause_via_admin(client, world["case"])
    world["case"].refresh_from_db()
    assert world["case"].status == DunningCase.Status.PAUSED
    assert client.get(reverse("reports:report", args=["campaign"])).status_code == 200
    assert client.get(reverse("reports:report", args=["campaign"]), {"format": "csv"}).status_code == 200


def test_auditor_reads_and_exports_but_changes_nothing(client, world):
    client.force_login(staff_user("auditor", "Auditor"))
    assert client.get(reverse("admin:dunning_dunningcase_changelist")).status_code == 200
    assert client.get(reverse("admin:dunning_dunningcase_change", args=[world["case"].pk])).status_code == 200
    assert client.get(reverse("admin:billing_invoice_changelist")).status_code == 200
    pause_via_admin(client, world["case"])
    world["case"].refresh_from_db()
    assert world["case"].status == DunningCase.Status.ACTIVE
    campaign = world["campaign"]
    assert client.post(reverse("admin:dunning_campaign_change", args=[campaign.pk]),
                       campaign_post(campaign, name="Nope")).status_code == 403
    assert client.post(reverse("admin:dunning_workitem_change", args=[world["item"].pk]),
                       {"new_comment": "hi"}).status_code == 403
    client.post(reverse("admin:dunning_workitem_changelist"),
                {"action": "mark_done", "_selected_action": [world["item"].pk]})
    world["item"].refresh_from_db()
    assert world["item"].status == WorkItem.Status.OPEN
    assert client.get(reverse("reports:report", args=["period"])).status_code == 200
    assert client.get(reverse("reports:report", args=["period"]), {"format": "csv"}).status_code == 200
    assert client.get(reverse("admin:index")).status_code == 200
