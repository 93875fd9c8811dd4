"""Pre-dunning: reminders before anything fails.

- Cards that expire soon: an "update your card" email at each of ``CARD_EXPIRY_REMINDER_DAYS`` (default
  30 and 7 days before the card's last valid day). The dedupe key names the card, its expiry and the
  threshold, so each reminder goes once; a card whose expiry was updated (or that is no longer the
  default) leaves the window, which stops the reminders.
- Invoices that are not paid automatically: one reminder ``INVOICE_DUE_REMINDER_DAYS`` before the due
  date (0: off).

Portal links are added when a message is sent (settings.NOTIFICATION_LINK_BUILDER).
Run by the "Send pre-dunning reminders" schedule (dunning.apps, core.schedules); safe to run any number of times.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from billing.models import Invoice
from customers.models import Customer, PaymentMethod
from dunning.messages import invoice_context
from notifications import services as outbox
from notifications.models import Channel, Notification

CHUNK = 1000


def _queue_new(rows: list[outbox.OutboxRow]) -> int:
    """Queue the rows whose dedupe key is new; returns how many were new."""
    if not rows:
        return 0
    existing = set(Notification.objects.filter(dedupe_key__in=[r.dedupe_key for r in rows])
                   .values_list("dedupe_key", flat=True))
    fresh = [r for r in rows if r.dedupe_key not in existing]
    outbox.queue(fresh)
    return len(fresh)


def reminder_threshold(days_left: int, thresholds: list[int]) -> int | None:
    """The reminder due for a card with ``days_left``: the smallest threshold it has reached."""
    reached = [d for d in thresholds if days_left <= d]
    return min(reached) if reached else None


def card_expiry_reminders(now: datetime.datetime | None = None) -> int:
    now = now or timezone.now()
    thresholds = sorted(settings.CARD_EXPIRY_REMINDER_DAYS)
    if not thresholds:
        return 0
    today = now.date()
    horizon = today + datetime.timedelta(days=max(thresholds))
    methods = (
        PaymentMethod.objects.filter(is_default=True, detached_at__isnull=True, exp_year__isnull=False,
                                     exp_month__isnull=False, customer__opt_out_email=False)
        .exclude(customer__status=Customer.Status.CHURNED)
        .filter(Q(exp_year__lt=horizon.year) | Q(exp_year=horizon.year, exp_month__lte=horizon.month))
        .filter(Q(exp_year__gt=today.year) | Q(exp_year=today.year, exp_month__gte=today.month))
        .select_related("customer")
        .order_by("pk")
    )
    rows: list[outbox.OutboxRow] = []
    queued = 0
    for method in methods.iterator(chunk_size=CHUNK):
        days_left = (method.expires_on() - today).days
        threshold = reminder_threshold(days_left, thresholds)
        if threshold is None or days_left < 0:
            continue
        customer = method.customer
        row = outbox.build(
            customer, channel=Channel.EMAIL, template_code="card_expiring",
            context={"customer_name": customer.name, "card_brand": method.brand.title() or "Card",
                     "card_last4": method.last4},
            dedupe_key=f"card-expiry:{method.pk}:{method.exp_year}-{method.exp_month:02d}:{threshold}d",
            reference=f"card:{method.pk}", send_after=now,
        )
        if row is not None:
            rows.append(row)
        if len(rows) >= CHUNK:
            queued += _queue_new(rows)
            rows = []
    return queued + _queue_new(rows)


def invoice_due_reminders(now: datetime.datetime | None = None) -> int:
    days = settings.INVOICE_DUE_REMINDER_DAYS
    if not days:
        return 0
    now = now or timezone.now()
    today = now.date()
    invoices = (
        Invoice.objects.open().filter(auto_collect=False, due_date__gte=today,
                                      due_date__lte=today + datetime.timedelta(days=days),
                                      customer__opt_out_email=False)
        .select_related("customer").order_by("pk")
    )
    rows = []
    queued = 0
    for invoice in invoices.iterator(chunk_size=CHUNK):
        customer = invoice.customer
        row = outbox.build(
            customer, channel=Channel.EMAIL, template_code="invoice_due_soon",
            context={"customer_name": customer.name, **invoice_context(invoice)},
            dedupe_key=f"invoice-due:{invoice.pk}:{days}d", reference=f"invoice:{invoice.pk}", send_after=now,
        )
        if row is not None:
            rows.append(row)
        if len(rows) >= CHUNK:
            queued += _queue_new(rows)
            rows = []
    return queued + _queue_new(rows)


def send_reminders(now: datetime.datetime | None = None) -> int:
    return card_expiry_reminders(now) + invoice_due_reminders(now)
