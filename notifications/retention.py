"""Data lifecycle: message bodies, merge data and tracking rows are removed after RETENTION_DAYS.

The outbox row itself stays (who was sent what template, when, with which outcome) so reports and
the case timeline keep working; only the text and personal merge data go. Tracking rows are any
model of this app with a foreign key to Notification (opens, clicks, provider events).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db import models
from django.utils import timezone

from notifications.models import Notification

logger = logging.getLogger(__name__)


def tracking_models() -> list[tuple[type[models.Model], str]]:
    """(model, its datetime field) for every notifications model that points at a Notification."""
    found = []
    for model in apps.get_app_config("notifications").get_models():
        if model is Notification:
            continue
        points_here = any(
            isinstance(f, models.ForeignKey) and f.related_model is Notification for f in model._meta.fields
        )
        if not points_here:
            continue
        names = [f.name for f in model._meta.fields if isinstance(f, models.DateTimeField)]
        for candidate in ("created_at", "at", "occurred_at", "timestamp", "received_at"):
            if candidate in names:
                found.append((model, candidate))
                break
    return found


def purge_old_messages(now: datetime | None = None, days: int | None = None) -> int:
    """Blank bodies and merge data of messages older than the retention period; delete tracking rows.

    Idempotent: already purged rows are skipped by the filter. Returns how many messages were purged.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=days or settings.RETENTION_DAYS)
    old = Notification.objects.filter(created_at__lt=cutoff).exclude(
        status__in=[Notification.Status.QUEUED, Notification.Status.SENDING]
    )
    purged = old.exclude(subject="", body_text="", body_html="", context={}, last_error="").update(
        subject="", body_text="", body_html="", context={}, last_error="", updated_at=now
    )
    removed = 0
    for model, field in tracking_models():
        removed += model.objects.filter(**{f"{field}__lt": cutoff}).delete()[0]
    logger.info("retention: %d message bodies removed, %d tracking rows deleted", purged, removed)
    return purged
