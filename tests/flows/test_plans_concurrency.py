"""Two workers charge due payment-plan instalments at the same moment: each is charged once."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count

from billing.models import PaymentAttempt, SandboxCharge
from dunning import plans
from dunning.cases import open_case
from dunning.plan_models import Instalment, PlanLimit
from tests.factories import CustomerFactory, InvoiceFactory, PaymentMethodFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

N = 60


def test_two_workers_charge_every_due_instalment_exactly_once(defaults):
    PlanLimit.objects.create(currency="USD", min_instalment=Decimal("10"), max_months=6)
    for i in range(N):
        customer = CustomerFactory()
        PaymentMethodFactory(customer=customer, token=f"tok_ok:conc{i}")
        open_case(InvoiceFactory(customer=customer, amount_due=Decimal("90.00")))
        plans.request_plan(customer, 3)
    barrier = threading.Barrier(2)
    counts, errors = [], []

    def worker():
        try:
            barrier.wait()
            counts.append(plans.charge_due_instalments())
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert sum(counts) == N
    assert SandboxCharge.objects.count() == N
    assert PaymentAttempt.objects.values("invoice").annotate(n=Count("id")).filter(n__gt=1).count() == 0
    assert Instalment.objects.filter(number=1, status=Instalment.Status.PAID).count() == N
