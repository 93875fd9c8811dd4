"""Signal receivers of the notifications app (imported by core.apps once every model is loaded)."""

from __future__ import annotations

from anymail.signals import AnymailTrackingEvent, tracking
from django.dispatch import receiver

from notifications.tracking import apply_event


@receiver(tracking, dispatch_uid="notifications.tracking")
def on_tracking(sender, event: AnymailTrackingEvent, esp_name: str = "", **kwargs) -> None:
    apply_event(event, esp_name)
