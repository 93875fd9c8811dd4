"""Benchmark: the notification sender, end to end, in one worker process.

Queues N reminder emails (mixed languages and currencies) for N customers, each about a real open
dunning case, then runs the sender as a worker does: claim a batch, apply the respect rules, render
the template (Babel money and dates, the HTML layout), hand the message to the email backend
(locmem, so nothing leaves the machine), mark it sent and note it on the case timeline.

Run alone: ``DATABASE_URL=postgres://... python -m bench.notifications [small|full]``.
Everything it creates is deleted afterwards (rows are tagged with a unique prefix).
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import uuid
from decimal import Decimal

TARGET_PER_SECOND = 300
SIZES = {"small": 1000, "quick": 1000, "full": 10_000}


def _setup_django() -> None:
    import django
    from django.apps import apps

    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        django.setup()


def _amount(currency: str, i: int) -> Decimal:
    return Decimal(1000 + 17 * (i % 997)) if currency == "JPY" else Decimal("9.99") + Decimal("1.37") * (i % 997)


def _create(n: int, tag: str):
    from django.utils import timezone

    from billing.models import Invoice
    from customers.models import Customer
    from dunning.defaults import ensure_default_campaign
    from dunning.messages import message_context
    from dunning.models import DunningCase, case_key
    from notifications.defaults import load_default_templates
    from notifications.models import Notification

    load_default_templates()
    campaign, _ = ensure_default_campaign()
    now = timezone.now()
    today = now.date()
    mix = [("en", "USD", "America/New_York"), ("es", "EUR", "Europe/Madrid"), ("it", "EUR", "Europe/Rome"),
           ("ja", "JPY", "Asia/Tokyo"), ("uk", "UAH", "Europe/Kyiv")]
    customers = Customer.objects.bulk_create(
        [Customer(external_id=f"{tag}-{i}", name=f"Bench Customer {i}", email=f"bench{i}@example.com",
                  locale=mix[i % 5][0], currency=mix[i % 5][1], timezone=mix[i % 5][2]) for i in range(n)],
        batch_size=1000,
    )
    invoices = Invoice.objects.bulk_create(
        # About a thousand different amounts, so formatting caches do not flatter the figure.
        [Invoice(external_id=f"{tag}-{c.pk}", number=f"B-{i:06d}", customer=c, currency=c.currency,
                 amount_due=_amount(c.currency, i),
                 issued_at=today - datetime.timedelta(days=10), due_date=today - datetime.timedelta(days=5))
         for i, c in enumerate(customers)],
        batch_size=1000,
    )
    cases = DunningCase.objects.bulk_create(
        [DunningCase(invoice=inv, customer=inv.customer, campaign=campaign, failed_at=now, status="active")
         for inv in invoices],
        batch_size=1000,
    )
    Notification.objects.bulk_create(
        [Notification(customer=case.customer, channel="email", recipient=case.customer.email,
                      template_code="reminder", locale=case.customer.locale, context=message_context(case, now),
                      dedupe_key=f"{tag}:{case.pk}", reference=case_key(case.pk), send_after=now)
         for case in cases],
        batch_size=1000,
    )
    _analyze()
    return [c.pk for c in customers]


def _analyze() -> None:
    """Fresh planner statistics after the bulk load, as autovacuum would give a live system."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for table in ("notifications_notification", "dunning_dunningcase", "dunning_caseevent",
                          "customers_customer"):
                cursor.execute(f"ANALYZE {table}")


def _cleanup(tag: str) -> None:
    from billing.models import Invoice
    from customers.models import Customer
    from dunning.models import DunningCase

    customers = Customer.objects.filter(external_id__startswith=f"{tag}-")
    DunningCase.objects.filter(customer__in=customers).delete()
    Invoice.objects.filter(customer__in=customers).delete()
    customers.delete()


def run(scale: str = "full") -> list[dict]:
    _setup_django()
    from django.core import mail
    from django.test.utils import override_settings

    from bench.common import count_queries, row
    from notifications import services as outbox
    from notifications.models import Notification

    n = SIZES.get(scale, SIZES["full"])
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    # Quiet hours off: the figure must not depend on the hour the benchmark runs at.
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend", NOTIFY_QUIET_HOURS=""):
        mail.outbox = []
        try:
            _create(n, tag)
            with count_queries() as counter:
                started = time.perf_counter()
                sent = 0
                while done := outbox.send_queued(limit=200):
                    sent += done
                elapsed = time.perf_counter() - started
            assert sent == n == len(mail.outbox), (sent, n, len(mail.outbox))
            assert not Notification.objects.filter(dedupe_key__startswith=tag).exclude(status="sent").exists()
        finally:
            mail.outbox = []
            _cleanup(tag)
    rate = sent / elapsed
    render_rate = _render_only(n)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        row(f"sender end to end, {n:,} emails in 5 languages: messages per second (1 worker, locmem backend)",
            rate, "messages/s", target=">= 300", ratio_to="render + hand to the backend alone (no database)",
            ratio=render_rate / rate, note=f"{elapsed:.1f}s; load average {load:.1f} at the end"),
        row(f"render + hand to the locmem backend alone, {n:,} emails (1 process, no database)", render_rate,
            "messages/s", target=">= 300"),
        row("sender: queries per 1,000 messages", counter.count * 1000 / n, "queries",
            target="constant per message as N grows (one attempt-and-answer write each)"),
    ]


def _render_only(n: int) -> float:
    """The CPU part alone: render five languages and hand each message to the locmem backend."""
    from django.core import mail
    from django.core.mail import get_connection
    from django.test.utils import override_settings

    from notifications.channels.base import send_email
    from notifications.defaults import iter_default_templates
    from notifications.models import MessageTemplate, Notification
    from notifications.rendering import SAMPLE_CONTEXT, render_parts

    templates = [MessageTemplate(**d) for d in iter_default_templates() if d["channel"] == "email"]
    samples = []
    for i, template in enumerate(templates):
        currency = ("USD", "EUR", "JPY")[i % 3]
        samples.append((template, {**SAMPLE_CONTEXT, "currency": currency}))
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        mail.outbox = []
        connection = get_connection()
        started = time.perf_counter()
        for i in range(n):
            template, ctx = samples[i % len(samples)]
            ctx = {**ctx, "amount": str(_amount(ctx["currency"], i))}
            subject, text, html = render_parts(template, ctx, template.locale)
            row = Notification(pk=i + 1, recipient="bench@example.com", template_code=template.code, context=ctx,
                               subject=subject, body_text=text, body_html=html)
            send_email(row, connection)
            if len(mail.outbox) >= 1000:
                mail.outbox = []
        elapsed = time.perf_counter() - started
        mail.outbox = []
    return n / elapsed


if __name__ == "__main__":
    for row in run(sys.argv[1] if len(sys.argv) > 1 else "full"):
        print(row)
