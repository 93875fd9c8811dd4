"""Issue 14: charges per second made by one worker process against a gateway that takes 300 ms a call.

N pending retry attempts on open cases. The gateway is the Stripe gateway, through the real stripe
SDK, talking to tests/support/fake_stripe.py in a process of its own, which answers each PaymentIntent in
Stripe's wire format after 300 ms (so its own work does not compete with the worker's). One process
runs the payment job (claim, re-check under lock, gateway call on the pool, settle, record the
payment and close the case) until nothing is pending. Reported: charges per second and the ratio to
the ideal, concurrency / latency (what a pool of that size would reach if our own work cost
nothing). The rate limit is lifted so it does not cap the figure.

    python -m bench --only payments
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from bench.common import Timer, row, truncate_all

SIZES = {"small": [300], "full": [1_500]}
LATENCY_MS = 300


def build(n: int, now: datetime.datetime) -> None:
    from billing.models import Invoice, PaymentAttempt
    from customers.models import Customer, PaymentMethod
    from dunning.models import Campaign, CampaignStep, DunningCase

    truncate_all()
    campaign = Campaign.objects.create(name="Bench", active=True)
    step = CampaignStep.objects.create(campaign=campaign, position=1, action="retry")
    customers = Customer.objects.bulk_create(
        Customer(external_id=f"p{i}", name=f"Bench {i}", email=f"p{i}@example.com") for i in range(n)
    )
    methods = PaymentMethod.objects.bulk_create(
        PaymentMethod(customer=c, gateway="stripe", token=f"pm_ok_{c.pk}", is_default=True, brand="visa",
                      last4="4242")
        for c in customers
    )
    invoices = Invoice.objects.bulk_create(
        Invoice(external_id=f"i{c.pk}", number=f"N{c.pk}", customer=c, currency="USD",
                amount_due=Decimal("49.00"), issued_at=now.date(), due_date=now.date())
        for c in customers
    )
    DunningCase.objects.bulk_create(
        DunningCase(invoice=inv, customer_id=inv.customer_id, campaign=campaign, failed_at=now,
                    next_step=step, next_action_at=now + datetime.timedelta(days=3))
        for inv in invoices
    )
    PaymentAttempt.objects.bulk_create(
        PaymentAttempt(invoice=inv, payment_method=m, amount=inv.amount_due, currency=inv.currency,
                       idempotency_key=f"bench:{inv.pk}", lease_until=now - datetime.timedelta(minutes=1))
        for inv, m in zip(invoices, methods, strict=True)
    )


def run(scale: str) -> list[dict]:
    from django.conf import settings
    from django.db import connection
    from django.test import override_settings

    from billing import attempts
    from billing.models import PaymentAttempt
    from dunning.models import DunningCase
    from dunning.payments import SETTLEMENT

    now = datetime.datetime.now(datetime.UTC)
    rows = []
    concurrency = settings.PAYMENT_GATEWAY_CONCURRENCY
    ideal = concurrency / (LATENCY_MS / 1000)
    for n in SIZES[scale]:
        build(n, now)
        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        fake_stripe = Path(__file__).parent.parent / "tests" / "support" / "fake_stripe.py"
        stripe = subprocess.Popen([sys.executable, str(fake_stripe), str(LATENCY_MS)], stdout=subprocess.PIPE,
                                  text=True)
        try:
            url = stripe.stdout.readline().strip()
            # DEBUG off, as a worker runs in production (DEBUG logs every query of every thread).
            with override_settings(DEBUG=False, PAYMENT_GATEWAY="billing.gateways.stripe.StripeGateway",
                                   STRIPE_API_KEY="sk_test_bench", STRIPE_API_BASE=url,
                                   PAYMENT_GATEWAY_RATE_PER_SECOND=0), Timer() as t:
                done = attempts.process_pending(SETTLEMENT)
        finally:
            stripe.terminate()
            stripe.wait()
        assert done == n, f"expected {n} charges, made {done}"
        succeeded = PaymentAttempt.objects.filter(outcome=PaymentAttempt.Outcome.SUCCEEDED,
                                                  gateway_reference__startswith="pi_").count()
        recovered = DunningCase.objects.filter(status=DunningCase.Status.RECOVERED).count()
        assert succeeded == n and recovered == n, f"{succeeded} charged, {recovered} recovered of {n}"
        rate = n / t.seconds
        rows.append(row(f"{n:,} charges at {LATENCY_MS} ms a call, pool of {concurrency}: charges per second "
                        "(1 process)", rate, "charges/s", target=">= 50",
                        ratio_to=f"ideal {ideal:.1f}/s (concurrency / latency)", ratio=rate / ideal,
                        note=f"{t.seconds:.1f}s"))
    return rows
