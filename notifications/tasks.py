"""Background tasks of the notifications app (django-q2). Idempotent: rows are claimed first."""

from __future__ import annotations

from notifications import webhooks


def deliver_webhooks() -> int:
    return webhooks.deliver_due()
