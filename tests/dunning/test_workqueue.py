"""The work queue: a call step creates a task; staff assign, comment, snooze and close it in the admin;
every action lands on the case timeline with the staff user as actor."""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse

from dunning import engine, workqueue
from dunning.cases import open_case
from dunning.errors import DunningError
from dunning.models import CampaignStep, CaseEvent, WorkItem
from dunning.workqueue import create_work_item
from tests.factories import CampaignFactory, CampaignStepFactory, CustomerFactory, InvoiceFactory
from tests.support.cases import staff_user
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def call_case(clock):
    campaign = CampaignFactory(name="Phone first")
    CampaignStepFactory(campaign=campaign, position=1, offset_days=0, action=CampaignStep.Action.CALL,
                        template_code="")
    CampaignStepFactory(campaign=campaign, position=2, offset_days=5, action=CampaignStep.Action.EMAIL)
    customer = CustomerFactory(name="Ada", phone="+14155550123")
    case, _ = open_case(InvoiceFactory(customer=customer, amount_due="75.00"))
    return case


def test_call_step_creates_one_task_in_the_queue(call_case, clock):
    engine.run_due_steps()
    engine.run_due_steps()  # a second run finds nothing due: still one task
    items = list(WorkItem.objects.filter(case=call_case))
    assert len(items) == 1
    item = items[0]
    assert item.kind == WorkItem.Kind.CALL and item.status == WorkItem.Status.OPEN
    assert "Ada" in item.title and "75.00" in item.title and "75.0000" not in item.title and "+14155550123" in item.body
    assert CaseEvent.objects.filter(case=call_case, kind="workitem.created").count() == 1
    assert list(workqueue.actionable()) == [item]


def test_staff_work_a_task_through_the_admin(call_case, clock, client):
    engine.run_due_steps()
    item = WorkItem.objects.get(case=call_case)
    agent = staff_user("agent", "Collections agent")
    client.force_login(agent)
    url = reverse("admin:dunning_workitem_change", args=[item.pk])
    assert client.get(url).status_code == 200

    response = client.post(url, {"assigned_to": agent.pk, "new_comment": "Left a voicemail",
                                 "snooze_until": "2026-03-04 09:00", "done": ""})
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.assigned_to == agent and item.status == WorkItem.Status.SNOOZED
    assert [c.body for c in item.comments.all()] == ["Left a voicemail"]
    assert item not in workqueue.actionable()

    # The snooze runs out: the task is back in the "to do now" queue.
    clock.move_to(T0 + datetime.timedelta(days=2, hours=1))
    assert item in workqueue.actionable()
    page = client.get(reverse("admin:dunning_workitem_changelist"), {"queue": "actionable"})
    assert page.context["cl"].result_count == 1

    client.post(reverse("admin:dunning_workitem_changelist"),
                {"action": "mark_done", "_selected_action": [item.pk]})
    item.refresh_from_db()
    assert item.status == WorkItem.Status.DONE and item.done_at == clock.now

    events = CaseEvent.objects.filter(case=call_case, kind__startswith="workitem.").exclude(kind="workitem.created")
    assert [(e.kind, e.actor_label) for e in events.order_by("id")] == [
        ("workitem.assigned", "agent"), ("workitem.commented", "agent"), ("workitem.snoozed", "agent"),
        ("workitem.done", "agent")]
    assert all(e.actor == agent for e in events)
    # The case page shows the task and its timeline.
    case_page = client.get(reverse("admin:dunning_dunningcase_change", args=[call_case.pk])).content.decode()
    assert "Left a voicemail" in case_page and "Work items" in case_page


def test_done_twice_is_harmless_and_reopen_is_logged(call_case, clock):
    engine.run_due_steps()
    item = WorkItem.objects.get(case=call_case)
    user = staff_user("agent", "Collections agent")
    workqueue.done(item, actor=user)
    workqueue.done(item, actor=user)
    assert CaseEvent.objects.filter(case=call_case, kind="workitem.done").count() == 1
    workqueue.reopen(item, actor=user)
    item.refresh_from_db()
    assert item.status == WorkItem.Status.OPEN
    with pytest.raises(DunningError):
        workqueue.snooze(item, clock.now - datetime.timedelta(hours=1), actor=user)


@pytest.mark.parametrize("kind", ["support", "plan_request", "needs_payment_method", "bounced"])
def test_items_from_portal_and_notifications_show_in_the_queue(kind, client, clock):
    customer = CustomerFactory()
    campaign = CampaignFactory()
    CampaignStepFactory(campaign=campaign, position=1)
    case, _ = open_case(InvoiceFactory(customer=customer))
    create_work_item(customer, kind, f"{kind} for {customer.name}", case=case, dedupe_key=f"x:{kind}")
    create_work_item(customer, kind, "duplicate", case=case, dedupe_key=f"x:{kind}")
    client.force_login(staff_user("agent", "Collections agent"))
    page = client.get(reverse("admin:dunning_workitem_changelist"), {"queue": "actionable", "kind": kind})
    assert page.context["cl"].result_count == 1
    dashboard = client.get(reverse("admin:index")).content.decode()
    assert f'data-figure="work-{kind}">1<' in dashboard
