"""Delivery channels. Each sends one rendered Notification and says whether a failure is permanent."""

from __future__ import annotations

from notifications.channels.base import DeliveryError, deliver, is_idempotent

__all__ = ["DeliveryError", "deliver", "is_idempotent"]
