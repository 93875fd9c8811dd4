"""Two worker processes run the due-steps job at once against PostgreSQL: every step runs once."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models import Count

from billing.models import Invoice, PaymentAttempt
from customers.models import Customer, PaymentMethod
from dunning.models import CampaignStep, CaseEvent, DunningCase
from notifications.models import Notification
from tests.factories import CampaignFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
N = 2000


def make_due_cases(now: datetime.datetime) -> None:
    campaign = CampaignFactory(name="Concurrent")
    steps = [
        CampaignStep.objects.create(campaign=campaign, position=1, action="email", template_code="reminder",
                                    channels=["email"]),
        CampaignStep.objects.create(campaign=campaign, position=2, action="retry"),
        CampaignStep.objects.create(campaign=campaign, position=3, action="mark_uncollectible"),
    ]
    customers = Customer.objects.bulk_create(
        Customer(external_id=f"c{i}", name=f"C {i}", email=f"c{i}@example.com") for i in range(N)
    )
    PaymentMethod.objects.bulk_create(
        PaymentMethod(customer=c, token=f"tok_ok:{c.pk}", is_default=True) for c in customers
    )
    invoices = Invoice.objects.bulk_create(
        Invoice(external_id=f"i{c.pk}", number=f"N{c.pk}", customer=c, currency="USD", amount_due=Decimal("10"),
                issued_at=now.date(), due_date=now.date())
        for c in customers
    )
    DunningCase.objects.bulk_create(
        DunningCase(invoice=inv, customer_id=inv.customer_id, campaign=campaign, failed_at=now,
                    next_step=steps[0], next_action_at=now)
        for inv in invoices
    )


def test_two_worker_processes_run_every_step_exactly_once():
    now = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=datetime.UTC)
    make_due_cases(now)
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
    }
    start_at = time.time() + 3
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "worker_process.py"),
                          now.isoformat(), str(start_at), "100"],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    counts = [int(out.strip().splitlines()[-1]) for out, _err in outputs]

    assert sum(counts) == 3 * N  # three steps per case, each run by exactly one process
    assert all(c > 0 for c in counts), f"both workers should have claimed work: {counts}"
    assert Notification.objects.count() == N
    assert Notification.objects.values("customer").annotate(n=Count("id")).filter(n__gt=1).count() == 0
    assert PaymentAttempt.objects.count() == N
    assert PaymentAttempt.objects.values("invoice").annotate(n=Count("id")).filter(n__gt=1).count() == 0
    assert DunningCase.objects.filter(status="exhausted").count() == N
    assert Invoice.objects.filter(status="uncollectible").count() == N
    assert CaseEvent.objects.filter(kind="case.exhausted").count() == N
