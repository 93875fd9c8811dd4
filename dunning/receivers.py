"""Put what happens to a case's messages on the case timeline (notifications knows no cases)."""

from __future__ import annotations

from django.dispatch import receiver

from dunning.models import CaseEvent, DunningCase
from notifications.services import notification_event


@receiver(notification_event, dispatch_uid="dunning.message_timeline")
def message_on_timeline(sender, notification, kind: str, detail: str = "", **kwargs) -> None:
    if not notification.reference.startswith("case:"):
        return
    case_id = int(notification.reference.split(":", 1)[1])
    if not DunningCase.objects.filter(pk=case_id).exists():
        return
    CaseEvent.objects.create(
        case_id=case_id,
        kind=f"message.{kind}",
        message=f"{notification.template_code} {kind} ({notification.channel})"
        + (f": {detail}" if detail else ""),
        payload={"notification": notification.pk, "channel": notification.channel, "detail": detail[:500]},
        actor_label="system",
    )
