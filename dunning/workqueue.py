"""The staff work queue: create, assign, comment, snooze and close work items.

Every action is written on the case timeline (the item's case, or else the customer's most recent
open case) with the staff user as actor, so the timeline stays the one audit trail.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from customers.models import Customer
from dunning.errors import DunningError
from dunning.models import DunningCase, WorkItem, WorkItemComment
from dunning.timeline import EventKind, log


def create_work_item(customer: Customer, kind: str, title: str, *, body: str = "", case: DunningCase | None = None,
                     actor=None, dedupe_key: str | None = None,
                     at: datetime | None = None) -> tuple[WorkItem, bool]:
    """Put something in the staff work queue (and on the case timeline). Deduplicated by key.
    ``at``: when it arose (the caller's clock), by default now."""
    at = at or timezone.now()
    fields = {"customer": customer, "kind": kind, "title": title[:200], "body": body, "case": case, "created_at": at}
    with transaction.atomic():
        if dedupe_key:
            item, created = WorkItem.objects.get_or_create(dedupe_key=dedupe_key, defaults=fields)
        else:
            item, created = WorkItem.objects.create(**fields), True
        if created and case is not None:
            log(case, EventKind.WORKITEM_CREATED, f"{item.get_kind_display()}: {title}", actor=actor, at=at,
                payload={"work_item": item.pk, "kind": kind})
    return item, created


def actionable(now: datetime | None = None) -> QuerySet[WorkItem]:
    """Open items, and snoozed items whose snooze has run out."""
    now = now or timezone.now()
    return WorkItem.objects.filter(
        Q(status=WorkItem.Status.OPEN) | Q(status=WorkItem.Status.SNOOZED, snoozed_until__lte=now)
    )


def _timeline_case(item: WorkItem) -> DunningCase | None:
    if item.case_id:
        return item.case
    return DunningCase.objects.open().filter(customer_id=item.customer_id).order_by("-failed_at").first()


def _locked(item: WorkItem) -> WorkItem:
    return WorkItem.objects.select_for_update(of=("self",)).select_related("case").get(pk=item.pk)


def _note(item: WorkItem, kind: str, message: str, actor, **payload) -> None:
    case = _timeline_case(item)
    if case is not None:
        log(case, kind, f"{item.get_kind_display()}: {message}", actor=actor,
            payload={"work_item": item.pk, **payload})


def assign(item: WorkItem, user, *, actor) -> WorkItem:
    with transaction.atomic():
        item = _locked(item)
        if item.status == WorkItem.Status.DONE:
            raise DunningError(f"Work item #{item.pk} is done")
        if item.assigned_to_id == (user.pk if user else None):
            return item
        item.assigned_to = user
        item.save(update_fields=["assigned_to", "updated_at"])
        who = user.get_username() if user else "nobody"
        _note(item, EventKind.WORKITEM_ASSIGNED, f"assigned to {who}", actor, assigned_to=who)
    return item


def comment(item: WorkItem, body: str, *, actor) -> WorkItemComment:
    body = body.strip()
    if not body:
        raise DunningError("A comment cannot be empty")
    with transaction.atomic():
        item = _locked(item)
        note = WorkItemComment.objects.create(item=item, author=actor, body=body)
        item.save(update_fields=["updated_at"])
        _note(item, EventKind.WORKITEM_COMMENTED, body[:200], actor, comment=note.pk)
    return note


def snooze(item: WorkItem, until: datetime, *, actor) -> WorkItem:
    with transaction.atomic():
        item = _locked(item)
        if item.status == WorkItem.Status.DONE:
            raise DunningError(f"Work item #{item.pk} is done")
        if until <= timezone.now():
            raise DunningError("Snooze until a time in the future")
        item.status = WorkItem.Status.SNOOZED
        item.snoozed_until = until
        item.save(update_fields=["status", "snoozed_until", "updated_at"])
        _note(item, EventKind.WORKITEM_SNOOZED, f"snoozed until {until:%Y-%m-%d %H:%M} UTC", actor,
              until=until.isoformat())
    return item


def done(item: WorkItem, *, actor, note: str = "") -> WorkItem:
    with transaction.atomic():
        item = _locked(item)
        if item.status == WorkItem.Status.DONE:
            return item  # a double click, or a colleague got there first
        item.status = WorkItem.Status.DONE
        item.done_at = timezone.now()
        item.snoozed_until = None
        item.save(update_fields=["status", "done_at", "snoozed_until", "updated_at"])
        if note.strip():
            WorkItemComment.objects.create(item=item, author=actor, body=note.strip())
        _note(item, EventKind.WORKITEM_DONE, note.strip()[:200] or "done", actor)
    return item


def reopen(item: WorkItem, *, actor) -> WorkItem:
    with transaction.atomic():
        item = _locked(item)
        if item.status == WorkItem.Status.OPEN:
            return item
        item.status = WorkItem.Status.OPEN
        item.done_at = None
        item.snoozed_until = None
        item.save(update_fields=["status", "done_at", "snoozed_until", "updated_at"])
        _note(item, EventKind.WORKITEM_REOPENED, "reopened", actor)
    return item
