"""Issue 2: due dunning steps processed per second by one worker process.

N cases are due at once, their next steps a realistic mix (reminder emails, retries, a final notice);
one process runs the engine until nothing is due. Reported: steps per second, queries per 1,000
cases (must stay constant as N grows), and the ratio to one SQL UPDATE touching the same rows,
the floor no per-row work can beat.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

from bench.common import Timer, count_queries, row, truncate_all

SIZES = {"small": [2_000, 10_000], "full": [10_000, 100_000]}


def build(n: int, now: datetime.datetime) -> None:
    from django.db import connection

    from billing.models import Invoice, PaymentAttempt
    from customers.models import Customer, PaymentMethod
    from dunning.models import Campaign, CampaignStep, DunningCase

    truncate_all()
    campaign = Campaign.objects.create(name="Bench", active=True)
    steps = [
        CampaignStep.objects.create(campaign=campaign, position=1, action="email", template_code="reminder",
                                    channels=["email"]),
        CampaignStep.objects.create(campaign=campaign, position=2, offset_days=3, action="retry"),
        CampaignStep.objects.create(campaign=campaign, position=3, offset_days=10, action="final_notice",
                                    template_code="final_notice", channels=["email"]),
        CampaignStep.objects.create(campaign=campaign, position=4, offset_days=14, action="suspend"),
    ]
    chunk = 5_000
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        customers = Customer.objects.bulk_create(
            Customer(external_id=f"b{start + i}", name=f"Bench {start + i}", email=f"b{start + i}@example.com")
            for i in range(size)
        )
        methods = PaymentMethod.objects.bulk_create(
            PaymentMethod(customer=c, token=f"tok_ok:{c.pk}", is_default=True, brand="visa", last4="4242")
            for c in customers
        )
        invoices = Invoice.objects.bulk_create(
            Invoice(external_id=f"i{c.pk}", number=f"N{c.pk}", customer=c, currency="USD",
                    amount_due=Decimal("49.00"), issued_at=now.date(), due_date=now.date())
            for c in customers
        )
        # Spread the due step across email / retry / final notice, as a real backlog would be.
        DunningCase.objects.bulk_create(
            DunningCase(invoice=inv, customer_id=inv.customer_id, campaign=campaign,
                        failed_at=now - datetime.timedelta(days=steps[k % 3].offset_days),
                        next_step=steps[k % 3], next_action_at=now - datetime.timedelta(minutes=1))
            for k, inv in enumerate(invoices)
        )
        # The failed charge that opened each case (reported by the billing system), as in a live
        # database: the attempts table is not empty when it is analyzed (see run()).
        PaymentAttempt.objects.bulk_create(
            PaymentAttempt(invoice=inv, payment_method=m, amount=inv.amount_due, currency=inv.currency,
                           outcome=PaymentAttempt.Outcome.FAILED, source=PaymentAttempt.Source.EXTERNAL,
                           decline_code="insufficient_funds", decline_class="soft", idempotency_key=f"open:{inv.pk}")
            for inv, m in zip(invoices, methods, strict=True)
        )
    with connection.cursor() as cur:  # created_at is auto_now_add: date the attempts at the failure
        cur.execute(
            "UPDATE billing_paymentattempt a SET created_at = c.failed_at, updated_at = c.failed_at, "
            "completed_at = c.failed_at, lease_until = c.failed_at "
            "FROM dunning_dunningcase c WHERE c.invoice_id = a.invoice_id"
        )


def floor_seconds(now: datetime.datetime) -> float:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cur, Timer() as t:
        cur.execute(
            "UPDATE dunning_dunningcase SET next_action_at = next_action_at + interval '1 day', updated_at = now() "
            "WHERE status = 'active' AND next_action_at <= %s",
            [now],
        )
        transaction.set_rollback(True)
    return t.seconds


def run(scale: str) -> list[dict]:
    from django.db import connection

    from dunning import engine

    now = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
    rows = []
    for n in SIZES[scale]:
        build(n, now)
        # Statistics as in a live database. Before the failed attempts above were built, this
        # analyzed an empty attempts table (0 rows): the engine's connection then cached a
        # sequential-scan plan for the deferred foreign-key check of each CaseEvent.attempt, and with
        # autovacuum off (as here) never replanned it, so every commit scanned all the attempts
        # written so far and the 100k run slowed down quadratically (docs/benchmarks.md).
        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        floor = floor_seconds(now)
        with count_queries() as counter, Timer() as t:
            done = engine.run_due_steps(now)
        assert done == n, f"expected {n} steps, ran {done}"
        rate = n / t.seconds
        rows.append(row(f"{n:,} due cases: steps per second (1 process)", rate, "steps/s", target=">= 2,000",
                        ratio_to="one SQL UPDATE of the same rows", ratio=t.seconds / floor,
                        note=f"{t.seconds:.2f}s vs floor {floor:.2f}s"))
        rows.append(row(f"{n:,} due cases: queries per 1,000 cases", counter.count * 1000 / n, "queries",
                        target="constant as N grows"))
    return rows
