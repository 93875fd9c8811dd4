"""In-app messages: what the portal banner and the REST API show, and their read/dismissed state.

The one place that reads and changes that state: the portal and the API call these functions.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from customers.models import Customer
from notifications.models import Channel, Notification

BANNER_SIZE = 20


def messages_for(customer: Customer, *, include_dismissed: bool = False) -> QuerySet[Notification]:
    """The customer's delivered in-app messages, newest first."""
    qs = Notification.objects.filter(customer=customer, channel=Channel.INAPP, status=Notification.Status.SENT)
    if not include_dismissed:
        qs = qs.filter(dismissed_at__isnull=True)
    return qs.order_by("-sent_at", "-id")


def unread_count(customer: Customer) -> int:
    return messages_for(customer).filter(read_at__isnull=True).count()


def banner(customer: Customer, limit: int = BANNER_SIZE) -> list[Notification]:
    """The latest messages not dismissed, as the portal shows them: showing them marks them read."""
    rows = list(messages_for(customer)[:limit])
    mark_read(*(row for row in rows if row.read_at is None))
    return rows


def mark_read(*notifications: Notification, at: datetime | None = None) -> int:
    """Mark in-app messages read (the first time wins); returns how many changed."""
    if not notifications:
        return 0
    return Notification.objects.filter(
        pk__in=[n.pk for n in notifications], channel=Channel.INAPP, read_at__isnull=True
    ).update(read_at=at or timezone.now(), updated_at=timezone.now())


def dismiss(notification: Notification, at: datetime | None = None) -> bool:
    """Hide an in-app message from the banner (it also counts as read); returns whether it changed."""
    at = at or timezone.now()
    mark_read(notification, at=at)
    return bool(
        Notification.objects.filter(pk=notification.pk, channel=Channel.INAPP, dismissed_at__isnull=True).update(
            dismissed_at=at, updated_at=timezone.now()
        )
    )
