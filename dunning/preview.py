"""Campaign preview: the timeline a campaign would produce for one customer or open case.

Times are shown in the customer's zone. Messages follow the contact policy: no contact during quiet
hours (moved to the end of the quiet period) and at most CAP messages per CAP_DAYS (deferred until
the window has room). The notifications app owns the real policy at send time; this module applies
the same documented defaults so staff see the schedule before activating a campaign.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.utils import timezone

from customers.models import Customer
from dunning.models import Campaign, CampaignStep, DunningCase

QUIET_START = datetime.time(21, 0)
QUIET_END = datetime.time(8, 0)
CAP = 3
CAP_DAYS = 7


@dataclass
class PreviewRow:
    step: CampaignStep
    planned_at: datetime.datetime  # UTC: failed_at + offset
    at: datetime.datetime  # after the contact policy, in the customer's zone
    note: str = ""
    past: bool = False

    @property
    def moved(self) -> bool:
        return self.at != self.planned_at


def out_of_quiet_hours(moment: datetime.datetime, tz) -> datetime.datetime:
    local = moment.astimezone(tz)
    t = local.time()
    if t >= QUIET_START:
        nxt = local.date() + datetime.timedelta(days=1)
        return datetime.datetime.combine(nxt, QUIET_END, tzinfo=tz)
    if t < QUIET_END:
        return datetime.datetime.combine(local.date(), QUIET_END, tzinfo=tz)
    return local


def apply_contact_policy(customer: Customer, moments: list[datetime.datetime]) -> list[tuple[datetime.datetime, str]]:
    """For each message time (in order), when it would go out and why it moved."""
    tz = customer.tz
    sent: list[datetime.datetime] = []
    out = []
    for moment in moments:
        notes = []
        at = out_of_quiet_hours(moment, tz)
        if at != moment.astimezone(tz):
            notes.append("moved out of quiet hours")
        window = [s for s in sent if s > at - datetime.timedelta(days=CAP_DAYS)]
        if len(window) >= CAP:
            at = out_of_quiet_hours(window[-CAP] + datetime.timedelta(days=CAP_DAYS), tz)
            notes.append(f"deferred: at most {CAP} messages per {CAP_DAYS} days")
        sent.append(at)
        out.append((at.astimezone(tz), "; ".join(notes)))
    return out


def preview(campaign: Campaign, customer: Customer, *, failed_at: datetime.datetime | None = None,
            case: DunningCase | None = None) -> list[PreviewRow]:
    now = timezone.now()
    failed_at = case.failed_at if case is not None else (failed_at or now)
    tz = customer.tz
    steps = list(campaign.steps.order_by("position"))
    rows = [PreviewRow(step=s, planned_at=failed_at + s.offset, at=(failed_at + s.offset).astimezone(tz))
            for s in steps]
    messages = [r for r in rows if r.step.sends_message or (r.step.action == CampaignStep.Action.SUSPEND
                                                              and r.step.template_code)]
    for row, (at, note) in zip(messages, apply_contact_policy(customer, [r.planned_at for r in messages]),
                               strict=True):
        row.at, row.note = at, note
    for row in rows:
        row.past = row.planned_at < now and case is not None
        if row.step.action == CampaignStep.Action.RETRY and customer.default_payment_method is None:
            row.note = "skipped: no payment method on file"
    return rows
