"""Put what happens to a case's messages on the case timeline (notifications knows no cases), and
follow an invoice paid in full (dunning.services.invoice_paid) with what other dunning modules own."""

from __future__ import annotations

from django.dispatch import receiver
from django.utils import timezone

from dunning import plans
from dunning.engine import message_context
from dunning.models import CaseEvent, DunningCase, WorkItem
from dunning.services import actor_fields, create_work_item, invoice_paid
from notifications.preferences import contact_preference_changed
from notifications.rendering import register_context_provider
from notifications.services import notification_event, notifications_sent


@receiver(notification_event, dispatch_uid="dunning.message_timeline")
def message_on_timeline(sender, notification, kind: str, detail: str = "", at=None, actor=None,
                        **kwargs) -> None:
    if kind == "sent" or not notification.reference.startswith("case:"):
        return  # sent messages arrive in groups through notifications_sent
    case_id = int(notification.reference.split(":", 1)[1])
    if not DunningCase.objects.filter(pk=case_id).exists():
        return
    CaseEvent.objects.create(
        case_id=case_id,
        kind=f"message.{kind}",
        message=f"{notification.template_code} {kind} ({notification.channel})"
        + (f": {detail}" if detail else ""),
        payload={"notification": notification.pk, "channel": notification.channel, "detail": detail[:500]},
        **actor_fields(actor), at=at or timezone.now(),
    )


@receiver(notifications_sent, dispatch_uid="dunning.sent_timeline")
def sent_on_timeline(sender, notifications, **kwargs) -> None:
    """One query to check the cases, one insert for the whole group."""
    by_case = {n: _case_id(n.reference) for n in notifications}
    existing = set(DunningCase.objects.filter(pk__in={c for c in by_case.values() if c}).values_list("pk", flat=True))
    CaseEvent.objects.bulk_create(
        CaseEvent(case_id=case_id, kind="message.sent", message=f"{n.template_code} sent ({n.channel})",
                  payload={"notification": n.pk, "channel": n.channel, "detail": ""}, actor_label="system",
                  at=n.sent_at)
        for n, case_id in by_case.items() if case_id in existing
    )


@receiver(notification_event, dispatch_uid="dunning.bounce_work_item")
def bounced_address_to_work_queue(sender, notification, kind: str, detail: str = "", **kwargs) -> None:
    """A hard bounce or complaint: staff should get a working address (later steps use another channel)."""
    if kind not in ("bounced", "complained"):
        return
    case = DunningCase.objects.filter(pk=_case_id(notification.reference)).first()
    create_work_item(notification.customer, WorkItem.Kind.BOUNCED, f"Email {kind}: {notification.recipient}",
                     body=detail, case=case, dedupe_key=f"bounced:{notification.customer_id}:{notification.recipient}")


@receiver(invoice_paid, dispatch_uid="dunning.plan_requests_on_paid")
def close_plan_requests_on_paid(sender, invoice, at, actor=None, **kwargs) -> None:
    plans.close_requests_for_paid_invoice(invoice, at=at, actor=actor)


@receiver(contact_preference_changed, dispatch_uid="dunning.preference_timeline")
def preference_on_timeline(sender, customer, field: str, value: bool, source: str = "", **kwargs) -> None:
    message = f"{field.replace('_', ' ')}: {'yes' if value else 'no'} ({source})"
    CaseEvent.objects.bulk_create(
        CaseEvent(case_id=case_id, kind="customer.preference", message=message,
                  payload={"field": field, "value": value, "source": source}, actor_label=source or "system")
        for case_id in DunningCase.objects.open().filter(customer=customer).values_list("pk", flat=True)
    )


def _case_id(reference: str) -> int | None:
    if reference.startswith("case:") and reference[5:].isdigit():
        return int(reference[5:])
    return None


def _case_message_context(case_id: int) -> dict:
    """Merge data of a message about this case, for template previews in the admin. No portal links:
    a preview is seen by staff, and a working link would let them act as the customer."""
    case = DunningCase.objects.select_related("invoice", "customer").get(pk=case_id)
    return message_context(case, timezone.now())


register_context_provider("case", _case_message_context)
