from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import EmailMultiAlternatives

from notifications import preferences
from notifications.models import Channel, Notification
from notifications.sms import SmsError, get_backend, send_sms

logger = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A failed delivery. ``permanent`` failures are not retried (bad address, rejected content)."""

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def send_email(notification: Notification, connection=None) -> str:
    message = EmailMultiAlternatives(
        subject=notification.subject,
        body=notification.body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[notification.recipient],
        connection=connection,
        headers=_headers(notification),
    )
    if notification.body_html:
        message.attach_alternative(notification.body_html, "text/html")
    # anymail reads these; other backends ignore them.
    message.metadata = {"notification_id": str(notification.pk)}
    message.tags = [notification.template_code]
    try:
        message.send()
    except Exception as exc:
        permanent = exc.__class__.__name__ in {"AnymailRecipientsRefused", "AnymailInvalidAddress"}
        raise DeliveryError(f"{exc.__class__.__name__}: {exc}", permanent=permanent) from exc
    status = getattr(message, "anymail_status", None)
    return (status.message_id or "") if status else ""


def _headers(notification: Notification) -> dict:
    headers = {"X-Dunning-Notification": str(notification.pk)}
    merged = getattr(notification, "merged_context", None) or notification.context or {}
    unsubscribe = merged.get("unsubscribe_url")
    if unsubscribe:
        # Mail clients show an "unsubscribe" button for this header (RFC 2369).
        headers["List-Unsubscribe"] = f"<{unsubscribe}>"
    return headers


def idempotency_key(notification: Notification) -> str:
    """The same for every attempt at one outbox row, so a provider that deduplicates by it sends once."""
    return f"notification-{notification.pk}"


def send_sms_message(notification: Notification, connection=None) -> str:
    try:
        return send_sms(notification.recipient, notification.body_text.strip(), reference=notification.reference,
                        idempotency_key=idempotency_key(notification))
    except SmsError as exc:
        if exc.opted_out:
            # The carrier says the number replied STOP: record it so later steps pick another channel.
            preferences.set_opt_out(notification.customer, Channel.SMS, True, source="sms:carrier-unsubscribed")
        raise DeliveryError(str(exc), permanent=exc.permanent) from exc


def send_inapp(notification: Notification, connection=None) -> str:
    # In-app messages are read from the database by the portal and the API: storing them is delivery.
    return f"inapp-{notification.pk}"


SENDERS = {
    Channel.EMAIL: send_email,
    Channel.INAPP: send_inapp,
    Channel.SMS: send_sms_message,
}


def is_idempotent(notification: Notification) -> bool:
    """Whether sending this row again after an attempt of unknown outcome reaches the customer at most
    once: in-app messages (storing the row is delivery) and SMS through a backend that deduplicates by
    idempotency key. Email is not: SMTP and the ESPs anymail speaks take no idempotency key (the
    message carries its row id in X-Dunning-Notification and the metadata, for tracking only)."""
    if notification.channel == Channel.INAPP:
        return True
    if notification.channel == Channel.SMS:
        return get_backend().idempotent
    return False


def deliver(notification: Notification, connection=None) -> str:
    sender = SENDERS.get(notification.channel)
    if sender is None:
        raise DeliveryError(f"No sender for channel {notification.channel!r}", permanent=True)
    return sender(notification, connection)
