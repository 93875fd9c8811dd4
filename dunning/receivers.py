"""Put what happens to a case's messages on the case timeline (notifications knows no cases), and
follow an invoice paid in full (dunning.payments.invoice_paid) with what other dunning modules own."""

from __future__ import annotations

from django.dispatch import receiver
from django.utils import timezone

from dunning import plans
from dunning.messages import message_context
from dunning.models import DunningCase, WorkItem, case_id_in
from dunning.payments import invoice_paid
from dunning.timeline import EventKind, entry, log_entries
from dunning.workqueue import create_work_item
from notifications.preferences import contact_preference_changed
from notifications.rendering import register_context_provider
from notifications.services import notification_event, notifications_sent


@receiver(notification_event, dispatch_uid="dunning.message_timeline")
def message_on_timeline(sender, notification, kind: str, detail: str = "", at=None, actor=None,
                        **kwargs) -> None:
    case_id = case_id_in(notification.reference)
    if kind == "sent" or case_id is None:
        return  # sent messages arrive in groups through notifications_sent
    if not DunningCase.objects.filter(pk=case_id).exists():
        return
    log_entries([entry(
        case_id, EventKind.for_message(kind),
        f"{notification.template_code} {kind} ({notification.channel})" + (f": {detail}" if detail else ""),
        at=at or timezone.now(), actor=actor,
        payload={"notification": notification.pk, "channel": notification.channel, "detail": detail[:500]},
    )])


@receiver(notifications_sent, dispatch_uid="dunning.sent_timeline")
def sent_on_timeline(sender, notifications, **kwargs) -> None:
    """One query to check the cases, one insert for the whole group."""
    by_case = {n: case_id_in(n.reference) for n in notifications}
    existing = set(DunningCase.objects.filter(pk__in={c for c in by_case.values() if c}).values_list("pk", flat=True))
    log_entries([
        entry(case_id, EventKind.MESSAGE_SENT, f"{n.template_code} sent ({n.channel})", at=n.sent_at,
              payload={"notification": n.pk, "channel": n.channel, "detail": ""})
        for n, case_id in by_case.items() if case_id in existing
    ])


@receiver(notification_event, dispatch_uid="dunning.bounce_work_item")
def bounced_address_to_work_queue(sender, notification, kind: str, detail: str = "", **kwargs) -> None:
    """A hard bounce or complaint: staff should get a working address (later steps use another channel)."""
    if kind not in ("bounced", "complained"):
        return
    case = DunningCase.objects.filter(pk=case_id_in(notification.reference)).first()
    create_work_item(notification.customer, WorkItem.Kind.BOUNCED, f"Email {kind}: {notification.recipient}",
                     body=detail, case=case, dedupe_key=f"bounced:{notification.customer_id}:{notification.recipient}")


@receiver(invoice_paid, dispatch_uid="dunning.plan_requests_on_paid")
def close_plan_requests_on_paid(sender, invoice, at, actor=None, **kwargs) -> None:
    plans.close_requests_for_paid_invoice(invoice, at=at, actor=actor)


@receiver(contact_preference_changed, dispatch_uid="dunning.preference_timeline")
def preference_on_timeline(sender, customer, field: str, value: bool, source: str = "", **kwargs) -> None:
    message = f"{field.replace('_', ' ')}: {'yes' if value else 'no'} ({source})"
    now = timezone.now()
    log_entries([
        entry(case_id, EventKind.CUSTOMER_PREFERENCES, message, at=now, actor=source or None,
              payload={"field": field, "value": value, "source": source})
        for case_id in DunningCase.objects.open().filter(customer=customer).values_list("pk", flat=True)
    ])


def _case_message_context(case_id: int) -> dict:
    """Merge data of a message about this case, for template previews in the admin. No portal links:
    a preview is seen by staff, and a working link would let them act as the customer."""
    case = DunningCase.objects.select_related("invoice", "customer").get(pk=case_id)
    return message_context(case, timezone.now())


register_context_provider("case", _case_message_context)
