from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import EmailMultiAlternatives

from notifications.models import Channel, Notification

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
        headers={"X-Dunning-Notification": str(notification.pk)},
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


def send_inapp(notification: Notification, connection=None) -> str:
    # In-app messages are read from the database by the portal and the API: storing them is delivery.
    return f"inapp-{notification.pk}"


SENDERS = {
    Channel.EMAIL: send_email,
    Channel.INAPP: send_inapp,
}


def deliver(notification: Notification, connection=None) -> str:
    sender = SENDERS.get(notification.channel)
    if sender is None:
        raise DeliveryError(f"No sender for channel {notification.channel!r}", permanent=True)
    return sender(notification, connection)
