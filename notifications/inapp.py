"""In-app messages: what the portal banner and the REST API show, and their read/dismissed state."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from customers.models import Customer
from notifications.models import Channel, Notification


def messages_for(customer: Customer, *, include_dismissed: bool = False) -> QuerySet[Notification]:
    """The customer's delivered in-app messages, newest first."""
    qs = Notification.objects.filter(customer=customer, channel=Channel.INAPP, status=Notification.Status.SENT)
    if not include_dismissed:
        qs = qs.filter(dismissed_at__isnull=True)
    return qs.order_by("-sent_at", "-id")


def unread_count(customer: Customer) -> int:
    return messages_for(customer).filter(read_at__isnull=True).count()


def mark_read(notification: Notification, at: datetime | None = None) -> bool:
    """Mark an in-app message read (idempotent: the first time wins); returns whether it changed."""
    return bool(
        Notification.objects.filter(pk=notification.pk, channel=Channel.INAPP, read_at__isnull=True).update(
            read_at=at or timezone.now(), updated_at=timezone.now()
        )
    )


def dismiss(notification: Notification, at: datetime | None = None) -> bool:
    """Hide an in-app message from the banner (it also counts as read); returns whether it changed."""
    at = at or timezone.now()
    Notification.objects.filter(pk=notification.pk, channel=Channel.INAPP, read_at__isnull=True).update(read_at=at)
    return bool(
        Notification.objects.filter(pk=notification.pk, channel=Channel.INAPP, dismissed_at__isnull=True).update(
            dismissed_at=at, updated_at=timezone.now()
        )
    )
