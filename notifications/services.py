"""The outbox: queue messages with a dedupe key, send them later outside any lock."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.core.mail import get_connection
from django.db import transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string

from customers.models import Customer
from notifications.channels import DeliveryError, deliver
from notifications.models import Channel, Notification
from notifications.rendering import TemplateRenderError, find_template, render_parts

logger = logging.getLogger(__name__)

# Sent after a message changes state (sent, failed, cancelled, delivered, bounced...), so the
# part that caused it (a dunning case) can note it on its own timeline.
# kwargs: notification, kind (str), detail (str)
notification_event = Signal()

MAX_ATTEMPTS = 6


def recipient_for(customer: Customer, channel: str) -> str:
    if channel == Channel.EMAIL:
        return customer.email or ""
    if channel == Channel.SMS:
        return str(customer.phone) if customer.phone else ""
    if channel == Channel.INAPP:
        return f"customer:{customer.pk}"
    return ""


def build(
    customer: Customer,
    *,
    channel: str,
    template_code: str,
    context: dict,
    dedupe_key: str,
    reference: str = "",
    send_after: datetime | None = None,
    recipient: str | None = None,
    locale: str | None = None,
) -> Notification | None:
    """An unsaved outbox row, or None when the customer has no address for the channel.

    ``recipient``/``locale`` address someone else of the customer (a billing contact, see
    notifications.recipients) instead of the customer's own address and language.
    """
    recipient = recipient or recipient_for(customer, channel)
    if not recipient:
        return None
    return Notification(
        customer=customer,
        channel=channel,
        recipient=recipient,
        template_code=template_code,
        locale=locale or customer.locale,
        context=context,
        dedupe_key=dedupe_key,
        reference=reference,
        send_after=send_after or timezone.now(),
    )


def queue_many(rows: list[Notification]) -> None:
    """Write outbox rows; a row whose dedupe key exists already is silently kept as it was."""
    if rows:
        Notification.objects.bulk_create(rows, ignore_conflicts=True)


def cancel_queued(reference: str, *, reason: str = "") -> int:
    """Cancel messages of this reference that have not gone out yet."""
    return Notification.objects.filter(reference=reference, status=Notification.Status.QUEUED).update(
        status=Notification.Status.CANCELLED, last_error=reason, updated_at=timezone.now()
    )


def claim_queued(now: datetime, limit: int) -> list[int]:
    with transaction.atomic():
        ids = list(
            Notification.objects.queued()
            .filter(send_after__lte=now)
            .order_by("send_after", "id")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Notification.objects.filter(pk__in=ids).update(
                status=Notification.Status.SENDING, attempts=F("attempts") + 1, updated_at=now
            )
    return ids


def send_queued(now: datetime | None = None, limit: int = 200) -> int:
    """Send due messages. Each row is claimed (queued -> sending) before the provider is called, so
    two senders never send the same row; returns how many were sent."""
    now = now or timezone.now()
    ids = claim_queued(now, limit)
    if not ids:
        return 0
    rows = list(Notification.objects.filter(pk__in=ids).select_related("customer").order_by("pk"))
    template_cache: dict = {}
    sent = 0
    connection = get_connection()
    connection.open()
    try:
        for row in rows:
            sent += _send_one(row, now, template_cache, connection)
    finally:
        connection.close()
    return sent


@lru_cache(maxsize=4)
def _link_builder(path: str):
    return import_string(path) if path else (lambda customer: {})


def merge_data(row: Notification) -> dict:
    """The stored merge data plus links minted now (a link's expiry counts from sending)."""
    return {**row.context, **_link_builder(settings.NOTIFICATION_LINK_BUILDER)(row.customer)}


def _send_one(row: Notification, now: datetime, template_cache: dict, connection) -> int:
    template = find_template(row.template_code, row.channel, row.locale, template_cache)
    try:
        if template is None:
            raise DeliveryError(f"No template {row.template_code!r} for channel {row.channel}", permanent=True)
        try:
            row.subject, row.body_text, row.body_html = render_parts(template, merge_data(row), row.locale)
        except TemplateRenderError as exc:
            raise DeliveryError(str(exc), permanent=True) from None
        provider_id = deliver(row, connection)
    except DeliveryError as exc:
        _record_failure(row, now, str(exc), permanent=exc.permanent)
        return 0
    row.status = Notification.Status.SENT
    row.sent_at = now
    row.provider_message_id = provider_id or ""
    row.last_error = ""
    row.save(update_fields=["status", "sent_at", "provider_message_id", "subject", "body_text", "body_html",
                            "last_error", "updated_at"])
    notification_event.send(Notification, notification=row, kind="sent", detail="")
    return 1


def _record_failure(row: Notification, now: datetime, error: str, *, permanent: bool) -> None:
    logger.warning("notification %s failed (%s): %s", row.pk, "permanent" if permanent else "transient", error)
    if permanent or row.attempts >= MAX_ATTEMPTS:
        row.status = Notification.Status.FAILED
        row.last_error = error[:2000]
        row.save(update_fields=["status", "last_error", "updated_at"])
        notification_event.send(Notification, notification=row, kind="failed", detail=error)
        return
    # Transient: back to the queue with exponential backoff (1, 2, 4, 8... minutes).
    row.status = Notification.Status.QUEUED
    row.send_after = now + timedelta(minutes=2 ** (row.attempts - 1))
    row.last_error = error[:2000]
    row.save(update_fields=["status", "send_after", "last_error", "updated_at"])


def release_stuck(now: datetime | None = None, after: timedelta = timedelta(minutes=15)) -> int:
    """Rows left in 'sending' by a worker that died mid-send. The provider may have taken them, so
    they are marked failed (and shown on the timeline) rather than sent a second time."""
    now = now or timezone.now()
    stuck = list(Notification.objects.filter(status=Notification.Status.SENDING, updated_at__lt=now - after))
    for row in stuck:
        row.status = Notification.Status.FAILED
        row.last_error = "The worker stopped while sending; not sent again to avoid a duplicate."
        row.save(update_fields=["status", "last_error", "updated_at"])
        notification_event.send(Notification, notification=row, kind="failed", detail=row.last_error)
    return len(stuck)
