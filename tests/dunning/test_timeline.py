"""The case timeline: every kind written is declared in EventKind, and one writer for all rows."""

from __future__ import annotations

import datetime
import importlib

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model

from dunning.cases import open_case
from dunning.models import CaseEvent
from dunning.timeline import EventKind, entry, log, log_entries
from notifications.preferences import set_opt_out
from tests.factories import (
    CampaignFactory,
    CampaignStepFactory,
    CustomerFactory,
    InvoiceFactory,
    PaymentMethodFactory,
)
from tests.support.clock import T0

pytestmark = pytest.mark.django_db


def test_a_dunning_run_writes_only_declared_kinds(defaults, clock):
    recovers = CustomerFactory()
    PaymentMethodFactory(customer=recovers, token="tok_succeed_after_2:recovers")
    never = CustomerFactory()
    PaymentMethodFactory(customer=never, token="tok_insufficient_funds:never")
    open_case(InvoiceFactory(customer=recovers), decline_code="insufficient_funds")
    open_case(InvoiceFactory(customer=never), decline_code="insufficient_funds")
    set_opt_out(never, "sms", True, source="test")
    for hour in range(0, 30 * 24 + 1, 6):
        clock.move_to(T0 + datetime.timedelta(hours=hour))
        clock.tick()
    written = set(CaseEvent.objects.values_list("kind", flat=True))
    assert {"case.opened", "step.retry", "payment.declined", "case.recovered", "customer.suspended",
            "case.exhausted", "message.queued", "message.sent", "customer.preferences"} <= written
    assert written <= set(EventKind.values)


def test_one_event_and_many_carry_the_same_actor_columns(db):
    staff = get_user_model().objects.create_user("agent", password="x")
    CampaignStepFactory(campaign=CampaignFactory(), position=1)
    case, _ = open_case(InvoiceFactory())
    log(case, EventKind.CASE_PAUSED, "by a user", actor=staff)
    log_entries([entry(case.pk, EventKind.CASE_RESUMED, "by a label", at=T0, actor="api:key"),
                 entry(case.pk, EventKind.MESSAGE_SENT, "by the system", at=T0)])
    rows = {e.message: (e.actor_id, e.actor_label) for e in case.events.exclude(kind=EventKind.CASE_OPENED)}
    assert rows == {"by a user": (staff.pk, "agent"), "by a label": (None, "api:key"),
                    "by the system": (None, "system")}


def test_provider_events_map_to_declared_kinds_and_unknown_ones_keep_their_name():
    assert EventKind.for_message("bounced") == EventKind.MESSAGE_BOUNCED
    assert EventKind.for_message("inbound_failed") == "message.inbound_failed"


def test_the_old_preference_kind_is_merged_into_the_one_kind(db):
    CampaignStepFactory(campaign=CampaignFactory(), position=1)
    case, _ = open_case(InvoiceFactory())
    CaseEvent.objects.create(case=case, kind="customer.preference", message="opt out sms: yes (sms:STOP)")
    migration = importlib.import_module("dunning.migrations.0011_one_preferences_kind")
    migration.forwards(apps, None)
    assert list(case.events.filter(kind__startswith="customer.pref").values_list("kind", flat=True)) == [
        EventKind.CUSTOMER_PREFERENCES]
