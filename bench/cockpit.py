"""Issue 7: the operator's cockpit on a large database.

With 1,000,000 invoices and 200,000 dunning cases (scale "full"; "small" uses 100,000 / 20,000),
time the admin dashboard, the case changelist and the recovery report (median of 5 requests each
through Django's test client, after one warm-up), and the growth from a 10,000-invoice database.
Data is loaded with COPY; columns this module does not set get their model default, so fields
added by other branches do not break it.
"""

from __future__ import annotations

import datetime
import random
import statistics
from decimal import Decimal

from bench.common import Timer, row, truncate_all

SIZES = {"small": [10_000, 100_000], "full": [10_000, 1_000_000]}
CASE_SHARE = 5  # one case per 5 invoices: 200,000 cases for 1,000,000 invoices
REQUESTS = 5
NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
CURRENCIES = ["USD"] * 6 + ["EUR"] * 3 + ["GBP"]
STATUSES = ["recovered"] * 55 + ["exhausted"] * 25 + ["active"] * 10 + ["paused"] * 2 + ["cancelled"] * 8
DECLINES = ["insufficient_funds", "do_not_honor", "expired_card", "card_velocity_exceeded", "processing_error"]


def copy_rows(model, rows) -> int:
    """COPY dicts into the model's table; missing columns get the field's default."""
    from django.db import connection
    from django.db.models import NOT_PROVIDED

    fields = list(model._meta.concrete_fields)
    defaults = {}
    for f in fields:
        if f.has_default() or f.default is not NOT_PROVIDED:
            defaults[f.attname] = f.get_db_prep_save(f.get_default(), connection)
        elif f.null:
            defaults[f.attname] = None
        elif f.blank:
            defaults[f.attname] = ""
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    names = [f.attname for f in fields]
    n = 0
    with connection.cursor() as cur:
        raw = cur.cursor  # psycopg 3 cursor
        with raw.copy(f"COPY {connection.ops.quote_name(model._meta.db_table)} ({columns}) FROM STDIN") as copy:
            for data in rows:
                copy.write_row([data[k] if k in data else defaults.get(k) for k in names])
                n += 1
        table = model._meta.db_table
        cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    return n


def build(n_invoices: int) -> dict:
    from billing.models import Invoice
    from customers.models import Customer
    from dunning.models import Campaign, CampaignStep, DunningCase, WorkItem

    truncate_all()
    rnd = random.Random(7)
    campaigns = []
    for i, name in enumerate(["Standard", "High value", "SEPA"]):
        c = Campaign.objects.create(name=name, active=True, priority=10 * (i + 1))
        steps = [CampaignStep.objects.create(campaign=c, position=p, offset_days=d, action=a,
                                             template_code=t, channels=["email"] if t else [])
                 for p, (d, a, t) in enumerate([(0, "email", "first_notice"), (3, "retry", ""),
                                                (7, "email", "reminder"), (14, "suspend", "")], start=1)]
        campaigns.append((c, steps))
    n_customers = max(n_invoices // 10, 1)
    now = NOW
    copy_rows(Customer, (
        {"id": i, "external_id": f"c{i}", "name": f"Customer {i}", "email": f"c{i}@example.com",
         "currency": CURRENCIES[i % 10], "segment": ["basic", "pro", "enterprise"][i % 3],
         "mrr": Decimal(10 + i % 200), "country": ["US", "IT", "DE", "GB"][i % 4],
         "created_at": now - datetime.timedelta(days=i % 1000), "updated_at": now}
        for i in range(1, n_customers + 1)
    ))
    case_status = {}

    # Precomputed values keep the generator cheap: a million rows is mostly COPY time.
    days = [(now - datetime.timedelta(days=d)).date() for d in range(400)]
    amounts = [str(5 + k) for k in range(500)]
    statuses = [STATUSES[rnd.randrange(len(STATUSES))] for _ in range(1000)]
    customer_currency = [CURRENCIES[c % 10] for c in range(n_customers + 1)]

    def invoices():
        for i in range(1, n_invoices + 1):
            customer = (i % n_customers) + 1
            amount = amounts[(i * 37) % 500]
            issued = days[i % 400]
            status, paid, paid_at = "paid", amount, now
            if i % CASE_SHARE == 0:
                st = statuses[(i // CASE_SHARE) % 1000]
                case_status[i] = st
                if st != "recovered":
                    status, paid, paid_at = ("open" if st in ("active", "paused") else "uncollectible"), "0", None
            yield {"id": i, "external_id": f"i{i}", "number": f"INV-{i:07d}", "customer_id": customer,
                   "currency": customer_currency[customer], "amount_due": amount, "amount_paid": paid,
                   "issued_at": issued, "due_date": issued, "status": status,
                   "paid_at": paid_at, "created_at": now, "updated_at": now}

    with Timer() as t:
        copy_rows(Invoice, invoices())

        def cases():
            for k, (invoice_id, st) in enumerate(case_status.items(), start=1):
                campaign, steps = campaigns[k % 3]
                failed = now - datetime.timedelta(minutes=rnd.randrange(365 * 24 * 60))
                closed = None if st in ("active", "paused") else failed + datetime.timedelta(
                    hours=rnd.randrange(1, 28 * 24))
                step = steps[rnd.randrange(len(steps))]
                yield {"id": k, "invoice_id": invoice_id, "customer_id": (invoice_id % n_customers) + 1,
                       "campaign_id": campaign.pk, "status": st, "failed_at": failed, "closed_at": closed,
                       "currency": customer_currency[(invoice_id % n_customers) + 1],
                       "recovered_amount": amounts[(invoice_id * 37) % 500] if st == "recovered" else None,
                       "decline_code": DECLINES[k % len(DECLINES)], "current_step_id": step.pk,
                       "next_step_id": steps[-1].pk if st == "active" else None,
                       "next_action_at": now + datetime.timedelta(days=1) if st == "active" else None,
                       "created_at": failed, "updated_at": closed or failed}

        copy_rows(DunningCase, cases())
        copy_rows(WorkItem, (
            {"id": j, "kind": ["call", "support", "plan_request", "needs_payment_method", "bounced"][j % 5],
             "status": "open" if j % 3 else "done", "customer_id": (j % n_customers) + 1,
             "title": f"Task {j}", "created_at": now, "updated_at": now}
            for j in range(1, max(len(case_status) // 40, 1) + 1)
        ))
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    return {"invoices": n_invoices, "cases": len(case_status), "load_seconds": t.seconds}


def median_ms(client, url: str) -> float:
    response = client.get(url)  # warm-up (template loading, first plans)
    assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(REQUESTS):
        with Timer() as t:
            response = client.get(url)
        assert response.status_code == 200
        times.append(t.seconds * 1000)
    return statistics.median(times)


PAGES = [
    ("dashboard (admin index)", "/admin/"),
    ("case changelist", "/admin/dunning/dunningcase/"),
    ("recovery report (by month, 90 days)", "/admin/reports/period/"),
]


def run(scale: str) -> list[dict]:
    import time_machine
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    try:
        setup_test_environment()  # DEBUG off, "testserver" allowed
    except RuntimeError:
        pass  # another benchmark module already did
    results: dict[int, dict[str, float]] = {}
    out = []
    sizes = SIZES[scale]
    for n in sizes:
        info = build(n)
        User = get_user_model()
        user = User.objects.create_superuser(f"bench{n}", f"bench{n}@example.com", "pw")
        client = Client()
        client.force_login(user)
        results[n] = {}
        with time_machine.travel(NOW, tick=True):
            for name, url in PAGES:
                results[n][name] = median_ms(client, url)
        out.append(row(f"{info['invoices']:,} invoices / {info['cases']:,} cases: load with COPY",
                       info["load_seconds"], "s"))
    base, big = sizes[0], sizes[-1]
    for name, _url in PAGES:
        out.append(row(f"{name}, {big:,} invoices", results[big][name], "ms (median of 5)", target="< 1000 ms",
                       ratio_to=f"{base:,} invoices", ratio=results[big][name] / results[base][name],
                       note=f"{results[base][name]:.0f} ms at {base:,}"))
    return out
