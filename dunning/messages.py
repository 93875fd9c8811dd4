"""What dunning's messages say and to whom: merge data, the dates they promise, fees, and one
message per customer and step.

Merge data is stored with a message and rendered in the customer's language at send time, when the
signed portal links are added too (settings.NOTIFICATION_LINK_BUILDER).

A customer with several invoices in dunning (active cases of the same campaign) gets one message
per step listing all of them, not one per invoice. The engine runs cases in claimed batches, so the
message is keyed by customer, campaign, step, the customer's local day, channel and recipient: the
first case of the group to run the step queues it, the others (in the same batch, in another batch
or on another worker the same day) hit the same unique dedupe key and only note it on their
timeline. Retries are unaffected: each case charges its own invoice under its own key.

Everything a batch needs is loaded once by ``prepare`` (a fixed number of queries), so the step
handlers still perform no query.
"""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db.models import Count

from billing import fees as billing_fees
from billing.models import Invoice, InvoiceFee
from customers.models import BillingContact
from dunning.models import CampaignStep, DunningCase, case_key
from dunning.timeline import EventKind
from notifications import policy
from notifications import recipients as addressing
from notifications import services as outbox

# --- Merge data -----------------------------------------------------------------------------------

def invoice_context(invoice: Invoice, group: list[Invoice] | None = None) -> dict:
    """Merge data of the invoices one message is about: ``invoice`` (its currency and due date) and
    the ``group`` it covers, in order (just ``invoice`` by default); the amount sums the group's
    balances in the invoice's currency."""
    group = group or [invoice]
    if len(group) == 1:
        amount = invoice.amount_remaining
    else:
        amount = sum((i.amount_remaining for i in group if i.currency == invoice.currency), Decimal("0"))
    return {
        "invoice_number": ", ".join(i.number for i in group),
        "amount": str(amount),
        "currency": invoice.currency,
        "due_date": invoice.due_date.isoformat(),
        "invoices": [{"number": i.number, "amount": str(i.amount_remaining), "currency": i.currency,
                      "due_date": i.due_date.isoformat()} for i in group],
    }


def message_context(case: DunningCase, now: datetime.datetime, group: list[Invoice] | None = None) -> dict:
    """Merge data of a message about this case (and the other invoices of ``group``, see invoice_context)."""
    invoice, customer = case.invoice, case.customer
    return {
        "customer_name": customer.name,
        **invoice_context(invoice, group),
        "failed_at": case.failed_at.astimezone(customer.tz).date().isoformat(),
        "days_overdue": max((now.astimezone(customer.tz).date() - invoice.due_date).days, 0),
    }


def fee_context(invoices: list[Invoice], fees_by_invoice: dict[int, list[InvoiceFee]] | None = None) -> dict:
    """Merge variables: open fees of these invoices, their total, and principal + fees."""
    if fees_by_invoice is None:
        fees_by_invoice = billing_fees.open_fees_by_invoice(inv.pk for inv in invoices)
    fees = [fee for inv in invoices for fee in fees_by_invoice.get(inv.pk, [])]
    currency = invoices[0].currency if invoices else ""
    total = billing_fees.fees_total([f for f in fees if f.currency == currency])
    principal = sum((inv.amount_remaining for inv in invoices if inv.currency == currency), Decimal("0"))
    return {
        "fees": [{"label": f.get_kind_display(), "amount": str(f.amount_open), "currency": f.currency,
                  "invoice_number": next((i.number for i in invoices if i.pk == f.invoice_id), "")} for f in fees],
        "fees_total": str(total),
        "total_owed": str(principal + total),
    }


# --- Dates a message (or the portal) can promise --------------------------------------------------

PROMISES = (("next_retry", CampaignStep.Action.RETRY), ("suspension", CampaignStep.Action.SUSPEND))


def upcoming_dates(case: DunningCase, steps: list[CampaignStep], tz: zoneinfo.ZoneInfo, *,
                   earliest: datetime.datetime | None, scheduled_id: int | None = None) -> dict[str, datetime.date]:
    """The days (in ``tz``) of the next retry and of the suspension among ``steps``, the case's steps
    still to run, in order; no query. A step runs at its offset from the failure, but never before
    ``earliest`` (a step whose time has passed runs at the next engine pass); the step
    ``scheduled_id`` (the case's next step) runs at ``earliest`` itself, its next_action_at."""
    dates = {}
    for key, action in PROMISES:
        found = next((s for s in steps if s.action == action), None)
        if found is None:
            continue
        if found.pk == scheduled_id:
            at = earliest
        else:
            at = case.failed_at + found.offset
            if earliest is not None:
                at = max(at, earliest)
        dates[key] = at.astimezone(tz).date()
    return dates


# --- One message per customer and step (the engine's batch) ---------------------------------------

KEY = "consolidation"


@dataclass
class Prepared:
    groups: dict[tuple[int, int], list[DunningCase]] = field(default_factory=dict)
    contacts: dict[int, list[BillingContact]] = field(default_factory=dict)
    fees: dict = field(default_factory=dict)
    escalation: dict[int, frozenset[str]] = field(default_factory=dict)
    queued_keys: set[str] = field(default_factory=set)


def _messages(step: CampaignStep) -> bool:
    return step.sends_message or (step.action == CampaignStep.Action.SUSPEND and bool(step.template_code))


def prepare(batch, cases: list[DunningCase], steps: dict[int, list[CampaignStep]]) -> None:
    """Load what the message steps of this batch need: sibling cases, contacts, fees, escalation."""
    prepared = Prepared()
    batch.extra[KEY] = prepared
    messaging = [c for c in cases if c.next_step is not None and _messages(c.next_step)]
    if not messaging:
        return
    customer_ids = {c.customer_id for c in messaging}
    if settings.DUNNING_CONSOLIDATE_MESSAGES:
        # Most customers have one invoice in dunning: find the groups with several first (one
        # aggregate), and load sibling cases for those customers only.
        multi = set(
            DunningCase.objects.filter(status=DunningCase.Status.ACTIVE, customer_id__any=customer_ids)
            .values_list("customer_id", "campaign_id").annotate(n=Count("id")).filter(n__gt=1)
            .values_list("customer_id", "campaign_id")
        )
        siblings = (
            DunningCase.objects.filter(
                status=DunningCase.Status.ACTIVE, customer_id__any={customer for customer, _c in multi}
            )
            .select_related("invoice").order_by("pk")
        ) if multi else []
        for other in siblings:
            prepared.groups.setdefault((other.customer_id, other.campaign_id), []).append(other)
    for contact in BillingContact.objects.filter(customer_id__any=customer_ids).order_by("-is_primary", "id"):
        prepared.contacts.setdefault(contact.customer_id, []).append(contact)
    invoice_ids = {c.invoice_id for c in messaging}
    invoice_ids |= {o.invoice_id for group in prepared.groups.values() for o in group}
    prepared.fees = billing_fees.open_fees_by_invoice(invoice_ids)
    for step in (c.next_step for c in messaging):
        roles = {s.escalate_to for s in steps.get(step.campaign_id, [step])
                 if s.escalate_to and s.position <= step.position}
        prepared.escalation[step.pk] = frozenset(roles)


def group_for(prepared: Prepared, case: DunningCase) -> list[DunningCase]:
    """The cases one message covers: this one plus the customer's other active cases of its campaign."""
    group = [o for o in prepared.groups.get((case.customer_id, case.campaign_id), []) if o.pk != case.pk]
    group = [o for o in group if o.invoice.amount_remaining > 0]
    return sorted([case, *group], key=lambda c: (c.invoice.due_date, c.invoice.number))


def context_for(batch, case: DunningCase, group: list[DunningCase], prepared: Prepared) -> dict:
    invoices = [c.invoice for c in group]
    step = case.next_step
    later = [s for s in batch.steps.get(case.campaign_id, []) if s.position > step.position]
    ctx = message_context(case, batch.now, invoices)
    ctx.update((f"{key}_date", day.isoformat())
               for key, day in upcoming_dates(case, later, case.customer.tz, earliest=batch.now).items())
    ctx.update(fee_context(invoices, prepared.fees))
    ctx["invoice_count"] = len(invoices)
    return ctx


def queue_messages(batch, case: DunningCase, step: CampaignStep) -> None:
    """Queue the step's messages for this case (or note that its group's message covers it).
    Recipients: billing contacts and escalation (notifications.recipients); the respect rules
    (opt-outs, bounces, quiet hours) choose the channels (notifications.policy)."""
    prepared: Prepared = batch.extra.get(KEY) or Prepared()
    group = group_for(prepared, case)
    ctx = context_for(batch, case, group, prepared)
    leader = min(group, key=lambda c: c.pk)
    if len(group) > 1:
        day = batch.now.astimezone(case.customer.tz).date().isoformat()
        base = f"dunning:cust:{case.customer_id}:camp:{case.campaign_id}:step:{step.pk}:{day}"
    else:
        base = case_key(case.pk, "step", step.pk)
    numbers = [c.invoice.number for c in group]
    # The respect rules choose the channels (an opted-out, bounced or missing one falls back).
    for choice in policy.plan_channels(case.customer, step.message_channels, step.template_code):
        channel = choice.channel
        if not channel:
            batch.event(case, EventKind.MESSAGE_SKIPPED, f"{choice.requested}: {choice.note}", step,
                        channel=choice.requested)
            continue
        targets = addressing.resolve(
            case.customer, channel, audience=step.audience, extra_roles=prepared.escalation.get(step.pk, frozenset()),
            contacts=prepared.contacts.get(case.customer_id, []),
        )
        if not targets:
            batch.event(case, EventKind.MESSAGE_SKIPPED, f"No {channel} address on file", step, channel=channel)
            continue
        for target in targets:
            key = f"{base}:{channel}" + (f":ct{target.contact_id}" if target.contact_id else "")
            if key in prepared.queued_keys:
                batch.event(case, EventKind.MESSAGE_CONSOLIDATED,
                            f"{step.template_code} ({channel}) covers this invoice",
                            step, channel=channel, invoices=numbers, leader=leader.pk)
                continue
            row = outbox.build(
                case.customer, channel=channel, template_code=step.template_code,
                context={**ctx, "contact_name": target.name}, dedupe_key=key,
                reference=case_key(leader.pk), send_after=batch.now, recipient=target.address, locale=target.locale,
            )
            if row is None:
                batch.event(case, EventKind.MESSAGE_SKIPPED, f"Not sent on {channel}", step, channel=channel)
                continue
            prepared.queued_keys.add(key)
            batch.notifications.append(row)
            note = "; ".join(n for n in (choice.note, getattr(row, "policy_note", "")) if n)
            batch.event(case, EventKind.MESSAGE_QUEUED,
                        f"{step.template_code} queued ({channel})" + (f": {note}" if note else ""), step,
                        channel=channel, template=step.template_code, contact=target.contact_id,
                        invoices=numbers, **({"note": note} if note else {}))
