"""Email delivery tracking: anymail's ``tracking`` signal (any ESP's webhook, normalised by
anymail; received in notifications.receivers) updates the message, and a hard bounce or complaint
marks the address unusable so the next steps use another channel."""

from __future__ import annotations

import logging
from datetime import datetime

from anymail.signals import AnymailTrackingEvent, EventType, RejectReason
from django.conf import settings
from django.core import checks
from django.db import transaction
from django.utils import timezone

from notifications import preferences
from notifications.models import Channel, Notification
from notifications.services import notification_event

logger = logging.getLogger(__name__)


@checks.register(checks.Tags.security, deploy=True)
def check_tracking_is_authenticated(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Without a shared secret anymail accepts any post to /anymail/<esp>/tracking/: anybody could
    mark customers' addresses undeliverable or opt them out of email."""
    if (settings.ANYMAIL or {}).get("WEBHOOK_SECRET"):
        return []
    return [checks.Warning(
        "Email tracking webhooks (/anymail/<esp>/tracking/) accept unauthenticated posts.",
        hint="Set ANYMAIL_WEBHOOK_SECRET=user:password and give the same basic-auth credentials to "
             "your ESP's webhook URL (https://user:password@<host>/anymail/<esp>/tracking/).",
        id="notifications.W001")]

# ESP bounce types anymail reports as "bounced" that are only temporary.
SOFT_BOUNCE_TYPES = {"SoftBounce", "Transient", "DnsError"}
UNDELIVERABLE_REJECTIONS = {RejectReason.INVALID, RejectReason.BOUNCED}
_SEVERE = ("bounced", "complained")


def find_notification(event: AnymailTrackingEvent) -> Notification | None:
    notification_id = str((event.metadata or {}).get("notification_id", ""))
    query = Notification.objects.select_related("customer")
    if notification_id.isdigit():
        found = query.filter(pk=int(notification_id), channel=Channel.EMAIL).first()
        if found:
            return found
    if event.message_id:
        return query.filter(provider_message_id=event.message_id).first()
    return None


def _is_soft(event: AnymailTrackingEvent) -> bool:
    """A temporary refusal: a soft bounce type, or a block (SendGrid's "blocked" bounce is the
    receiving server refusing the sender's reputation for now, not an address that does not exist)."""
    esp = event.esp_event if isinstance(event.esp_event, dict) else {}
    return esp.get("Type") in SOFT_BOUNCE_TYPES or (esp.get("event") == "bounce" and esp.get("type") == "blocked")


def apply_event(event: AnymailTrackingEvent, esp_name: str = "") -> str:
    """Record one tracking event; returns what was recorded ('' when nothing changed)."""
    notification = find_notification(event)
    if notification is None:
        logger.info("tracking %s for unknown message %s (%s)", event.event_type, event.message_id, esp_name)
        return ""
    at: datetime = event.timestamp or timezone.now()
    kind = event.event_type
    detail = event.description or event.mta_response or ""
    if kind == EventType.BOUNCED and _is_soft(event):
        kind = EventType.DEFERRED
    if kind == EventType.REJECTED and event.reject_reason in UNDELIVERABLE_REJECTIONS:
        kind = EventType.BOUNCED
    fields: dict = {}
    with transaction.atomic():
        row = Notification.objects.select_for_update().get(pk=notification.pk)
        if kind == EventType.DELIVERED and row.delivered_at is None:
            fields["delivered_at"] = at
        elif kind == EventType.OPENED and row.opened_at is None:
            fields["opened_at"] = at
        elif kind == EventType.CLICKED and row.clicked_at is None:
            fields["clicked_at"] = at
        elif kind in (EventType.BOUNCED, EventType.COMPLAINED) and row.tracking_status not in _SEVERE:
            fields["bounced_at"] = at
        elif kind == EventType.UNSUBSCRIBED and not row.customer.opt_out_email:
            pass  # recorded through the preference change below
        else:
            return ""
        if row.tracking_status not in _SEVERE:
            fields["tracking_status"] = kind
        for name, value in fields.items():
            setattr(row, name, value)
        row.save(update_fields=[*fields, "updated_at"])
    customer = row.customer
    if kind in (EventType.BOUNCED, EventType.COMPLAINED):
        preferences.mark_email_undeliverable(customer, source=f"email:{kind}")
    if kind in (EventType.COMPLAINED, EventType.UNSUBSCRIBED):
        preferences.set_opt_out(customer, Channel.EMAIL, True, source=f"email:{kind}")
    notification_event.send(Notification, notification=row, kind=str(kind), detail=detail[:500], at=at)
    return str(kind)

