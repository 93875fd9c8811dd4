"""Two workers at once (PostgreSQL): fees added once, one consolidated message per customer and step."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import time_machine
from django.db import connection

from billing.models import InvoiceFee
from dunning import engine, fees
from dunning.cases import open_case
from notifications.models import Notification
from tests.factories import CampaignFactory, CampaignStepFactory, CustomerFactory, FeePolicyFactory, InvoiceFactory
from tests.support.clock import T0

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_in_threads(func, n: int = 3) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def worker():
        try:
            barrier.wait()
            func()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_fee_jobs_add_each_fee_once():
    with time_machine.travel(T0, tick=False):
        campaign = CampaignFactory()
        CampaignStepFactory(campaign=campaign, position=1, offset_days=60)
        FeePolicyFactory(campaign=campaign, fixed_fees={"USD": "15"}, annual_interest_rate=Decimal("10"))
        invoices = [InvoiceFactory(amount_due=Decimal("100")) for _ in range(40)]
        for invoice in invoices:
            open_case(invoice, campaign=campaign)
    with time_machine.travel(T0.replace(day=12), tick=False):
        assert run_in_threads(lambda: fees.apply_fees(chunk=7)) == []
    assert InvoiceFee.objects.filter(kind="fixed").count() == 40
    assert InvoiceFee.objects.filter(kind="interest").count() == 40
    assert set(InvoiceFee.objects.filter(kind="interest").values_list("amount", flat=True)) == {Decimal("0.25")}


def test_concurrent_engines_send_one_consolidated_message(settings):
    settings.DUNNING_BATCH_SIZE = 1
    with time_machine.travel(T0, tick=False):
        campaign = CampaignFactory()
        CampaignStepFactory(campaign=campaign, position=1, template_code="reminder")
        CampaignStepFactory(campaign=campaign, position=2, offset_days=30, template_code="reminder")
        customers = [CustomerFactory() for _ in range(4)]
        for customer in customers:
            for _ in range(3):
                open_case(InvoiceFactory(customer=customer), campaign=campaign)
        assert run_in_threads(engine.run_due_steps) == []
    assert Notification.objects.count() == 4
    assert sorted(Notification.objects.values_list("customer_id", flat=True)) == sorted(c.pk for c in customers)
