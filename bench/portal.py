"""Issue 5: the customer portal's overview page and the payment-plan instalment charger.

The overview is rendered in-process (Django's test client, no HTTP server) for customers with 1 and
with 5 open invoices in dunning: queries per page must not grow with the number of invoices. The
instalment job charges N due instalments through the sandbox gateway in one process.
"""

from __future__ import annotations

import datetime
import statistics
from decimal import Decimal

from bench.common import Timer, count_queries, row, truncate_all

SIZES = {"small": {"pages": 200, "instalments": 200}, "full": {"pages": 1_000, "instalments": 2_000}}


def build_customers(n: int, invoices_each: int, now: datetime.datetime, prefix: str) -> list:
    from billing.models import Invoice
    from customers.models import Customer, PaymentMethod
    from dunning.defaults import ensure_default_campaign
    from dunning.models import DunningCase

    campaign, _ = ensure_default_campaign()
    first = campaign.steps.order_by("position").first()
    customers = Customer.objects.bulk_create(
        Customer(external_id=f"{prefix}{i}", name=f"Bench {i}", email=f"{prefix}{i}@example.com") for i in range(n)
    )
    PaymentMethod.objects.bulk_create(
        PaymentMethod(customer=c, token=f"tok_ok:{prefix}{c.pk}", is_default=True, brand="visa", last4="4242",
                      exp_month=12, exp_year=2030)
        for c in customers
    )
    invoices = Invoice.objects.bulk_create(
        Invoice(external_id=f"{prefix}i{c.pk}-{k}", number=f"N{c.pk}-{k}", customer=c, currency="USD",
                amount_due=Decimal("90.00"), issued_at=now.date(), due_date=now.date())
        for c in customers for k in range(invoices_each)
    )
    DunningCase.objects.bulk_create(
        DunningCase(invoice=inv, customer_id=inv.customer_id, campaign=campaign, failed_at=now, next_step=first,
                    next_action_at=now)
        for inv in invoices
    )
    return customers


def overview_figures(customers) -> tuple[float, float]:
    """(pages per second, queries per page) for the overview of each customer."""
    from django.test import Client

    from dunning.links import make_token

    client = Client(HTTP_HOST="localhost")
    urls = [f"/portal/{make_token(c)}/" for c in customers]
    client.get(urls[0])  # warm templates and translations
    queries = []
    with Timer() as t:
        for url in urls:
            with count_queries() as counter:
                response = client.get(url)
            assert response.status_code == 200, response.status_code
            queries.append(counter.count)
    return len(urls) / t.seconds, statistics.median(queries)


def run(scale: str) -> list[dict]:
    from django.utils import timezone

    from dunning import plans
    from dunning.plan_models import PlanLimit

    sizes = SIZES[scale]
    now = timezone.now()
    rows = []
    per_page = {}
    for invoices_each in (1, 5):
        truncate_all()
        customers = build_customers(sizes["pages"], invoices_each, now, prefix=f"p{invoices_each}-")
        rate, queries = overview_figures(customers)
        per_page[invoices_each] = queries
        rows.append(row(f"overview with {invoices_each} open invoice(s): pages per second (1 process, in-process)",
                        rate, "pages/s"))
        rows.append(row(f"overview with {invoices_each} open invoice(s): queries per page", queries, "queries",
                        target="same for 1 and 5 invoices"))

    truncate_all()
    n = sizes["instalments"]
    customers = build_customers(n, 1, now, prefix="plan-")
    PlanLimit.objects.create(currency="USD", min_instalment=Decimal("10"), max_months=6)
    for customer in customers:
        plans.request_plan(customer, 3)
    with count_queries() as counter, Timer() as t:
        charged = plans.charge_due_instalments()
    assert charged == n, f"expected {n} instalments charged, got {charged}"
    rows.append(row(f"{n:,} due instalments: charged per second (1 process)", n / t.seconds, "instalments/s",
                    note=f"{t.seconds:.2f}s, {counter.count / n:.1f} queries each"))
    return rows
