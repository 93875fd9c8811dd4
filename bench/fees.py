"""Issue 8: the late-fee job, consolidated reminders and erasure, on PostgreSQL.

Expects Django set up on a scratch database (``python -m bench`` does it). Each scenario runs inside
a transaction that is rolled back, so it leaves nothing behind.

- fee job, first run of the day: invoices per second (one-off fees + interest from a payment history).
  Target: 100,000 invoices in 10 minutes (>= 170/s).
- fee job, repeated the same day (the hourly schedule): invoices per second, ratio to the first run.
- engine with consolidation: steps per second when every customer has three invoices due at the same
  step, ratio to the same run with one message per invoice; messages per customer (must be 1).
- erasure of one customer with 300 messages and 900 timeline events among N other customers.
"""

from __future__ import annotations

import datetime
import time
from decimal import Decimal

SIZES = {"small": 2_000, "full": 20_000}


class _Rollback(Exception):
    pass


def _rolled_back(func):
    from django.db import transaction

    result = {}
    try:
        with transaction.atomic():
            result["value"] = func()
            raise _Rollback
    except _Rollback:
        pass
    return result["value"]


def _customers(n: int, now, *, invoices_each: int = 1, fee_policy: bool = True, prefix: str = "b"):
    from billing.models import Invoice, PaymentAllocation
    from customers.models import Customer, PaymentMethod
    from dunning.models import Campaign, CampaignStep, DunningCase, FeePolicy

    campaign = Campaign.objects.create(name=f"Bench {prefix}", active=True)
    step = CampaignStep.objects.create(campaign=campaign, position=1, action="email", template_code="reminder",
                                       channels=["email"])
    CampaignStep.objects.create(campaign=campaign, position=2, offset_days=30, action="retry")
    if fee_policy:
        FeePolicy.objects.create(campaign=campaign, enabled=True, fixed_fees={"USD": "15"},
                                 annual_interest_rate=Decimal("10"))
    due = (now - datetime.timedelta(days=20)).date()
    chunk = 5_000
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        customers = Customer.objects.bulk_create(
            Customer(external_id=f"{prefix}{start + i}", name=f"Bench {start + i}",
                     email=f"{prefix}{start + i}@example.com") for i in range(size))
        PaymentMethod.objects.bulk_create(
            PaymentMethod(customer=c, token=f"tok_ok:{prefix}{c.pk}", is_default=True) for c in customers)
        invoices = Invoice.objects.bulk_create(
            Invoice(external_id=f"{prefix}i{c.pk}-{k}", number=f"{prefix}N{c.pk}-{k}", customer=c, currency="USD",
                    amount_due=Decimal("100.00"), amount_paid=Decimal("20.00"), issued_at=due, due_date=due)
            for c in customers for k in range(invoices_each))
        PaymentAllocation.objects.bulk_create(
            PaymentAllocation(invoice=inv, received_at=now - datetime.timedelta(days=5), amount=Decimal("20.00"),
                              currency="USD", to_invoice=Decimal("20.00")) for inv in invoices)
        DunningCase.objects.bulk_create(
            DunningCase(invoice=inv, customer_id=inv.customer_id, campaign=campaign, failed_at=now,
                        next_step=step, next_action_at=now - datetime.timedelta(minutes=1)) for inv in invoices)


def _fee_job(n: int) -> list[dict]:
    from django.utils import timezone

    from billing.models import InvoiceFee
    from dunning import fees

    now = timezone.now()

    def scenario():
        _customers(n, now)
        started = time.perf_counter()
        fees.apply_fees(now)
        first = time.perf_counter() - started
        count = InvoiceFee.objects.count()
        started = time.perf_counter()
        fees.apply_fees(now + datetime.timedelta(minutes=60))
        again = time.perf_counter() - started
        assert InvoiceFee.objects.count() == count == 2 * n, "fees must be added once"
        return first, again

    first, again = _rolled_back(scenario)
    return [
        {"name": f"fee job, first run of the day ({n:,} invoices)", "value": round(n / first, 1),
         "unit": "invoices/s", "target": ">= 170 invoices/s (100k in 10 min)", "ratio_to": None, "ratio": None},
        {"name": f"fee job, repeated the same day ({n:,} invoices)", "value": round(n / again, 1),
         "unit": "invoices/s", "target": "much faster than the first run", "ratio_to": "first run",
         "ratio": round(first / again, 2)},
    ]


def _engine(n_customers: int) -> list[dict]:
    from django.conf import settings
    from django.utils import timezone

    from dunning import engine
    from notifications.models import Notification

    now = timezone.now()

    def scenario(consolidate: bool):
        settings.DUNNING_CONSOLIDATE_MESSAGES = consolidate
        _customers(n_customers, now, invoices_each=3, fee_policy=False, prefix="c" if consolidate else "p")
        started = time.perf_counter()
        steps = engine.run_due_steps(now)
        elapsed = time.perf_counter() - started
        return steps / elapsed, Notification.objects.count() / n_customers

    original = settings.DUNNING_CONSOLIDATE_MESSAGES
    try:
        plain_rate, plain_msgs = _rolled_back(lambda: scenario(False))
        rate, msgs = _rolled_back(lambda: scenario(True))
    finally:
        settings.DUNNING_CONSOLIDATE_MESSAGES = original
    return [
        {"name": f"engine, 3 invoices per customer, consolidated ({3 * n_customers:,} cases)", "value": round(rate, 1),
         "unit": "steps/s", "target": "close to one message per invoice", "ratio_to": "one message per invoice",
         "ratio": round(rate / plain_rate, 2)},
        {"name": "messages per customer and step (consolidated)", "value": round(msgs, 2), "unit": "messages",
         "target": "1", "ratio_to": "one message per invoice", "ratio": round(msgs / plain_msgs, 2)},
    ]


def _erase(n: int) -> list[dict]:
    from django.utils import timezone

    from customers.models import Customer
    from dunning import privacy
    from dunning.cases import cancel_case
    from dunning.models import CaseEvent, DunningCase, case_key
    from notifications.models import Notification

    now = timezone.now()

    def scenario():
        _customers(n, now, fee_policy=False)
        customer = Customer.objects.order_by("pk").first()
        case = DunningCase.objects.get(customer=customer)
        Notification.objects.bulk_create(
            Notification(customer=customer, recipient=customer.email, template_code="reminder",
                         body_text=f"Hello {customer.name}, message {i}", context={"customer_name": customer.name},
                         dedupe_key=f"bench-erase-{i}", reference=case_key(case.pk), status="sent")
            for i in range(300))
        CaseEvent.objects.bulk_create(
            CaseEvent(case=case, kind="note", message=f"Spoke to {customer.name} ({i})") for i in range(900))
        cancel_case(case)
        started = time.perf_counter()
        privacy.erase_customer(customer)
        return time.perf_counter() - started

    seconds = _rolled_back(scenario)
    return [{"name": f"erase one customer (300 messages, 900 events) among {n:,}", "value": round(seconds, 3),
             "unit": "s", "target": "< 2 s", "ratio_to": None, "ratio": None}]


def run(scale: str) -> list[dict]:
    n = SIZES.get(scale, SIZES["small"])
    return _fee_job(n) + _engine(n // 3) + _erase(n)
