"""Messages of campaign steps: who is addressed, and one message per customer and step.

A customer with several invoices in dunning (active cases of the same campaign) gets one message
per step listing all of them, not one per invoice. The engine runs cases in claimed batches, so the
message is keyed by customer, campaign, step, the customer's local day, channel and recipient: the
first case of the group to run the step queues it, the others (in the same batch, in another batch
or on another worker the same day) hit the same unique dedupe key and only note it on their
timeline. Retries are unaffected: each case charges its own invoice under its own key.

Everything is loaded once per batch by ``prepare`` (a fixed number of queries), so the handlers
still perform no query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db.models import Count

from billing.fees import open_fees_by_invoice
from customers.models import BillingContact
from dunning.models import CampaignStep, DunningCase
from notifications import policy
from notifications import recipients as addressing
from notifications import services as outbox

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
    prepared.fees = open_fees_by_invoice(invoice_ids)
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
    from dunning import engine
    from dunning.fees import fee_context
    from dunning.message_dates import upcoming_dates

    ctx = engine.message_context(case, batch.now) | upcoming_dates(
        case, case.next_step, batch.steps.get(case.campaign_id, []), batch.now)
    invoices = [c.invoice for c in group]
    ctx.update(fee_context(invoices, prepared.fees))
    ctx["invoice_count"] = len(invoices)
    if len(invoices) > 1:
        currency = case.invoice.currency
        ctx["invoice_number"] = ", ".join(inv.number for inv in invoices)
        ctx["amount"] = str(sum((i.amount_remaining for i in invoices if i.currency == currency), Decimal("0")))
        ctx["invoices"] = [
            {"number": inv.number, "amount": str(inv.amount_remaining), "currency": inv.currency,
             "due_date": inv.due_date.isoformat()}
            for inv in invoices
        ]
    return ctx


def queue_messages(batch, case: DunningCase, step: CampaignStep) -> None:
    """Queue the step's messages for this case (or note that its group's message covers it)."""
    prepared: Prepared = batch.extra.get(KEY) or Prepared()
    group = group_for(prepared, case)
    ctx = context_for(batch, case, group, prepared)
    leader = min(group, key=lambda c: c.pk)
    if len(group) > 1:
        day = batch.now.astimezone(case.customer.tz).date().isoformat()
        base = f"dunning:cust:{case.customer_id}:camp:{case.campaign_id}:step:{step.pk}:{day}"
    else:
        base = f"case:{case.pk}:step:{step.pk}"
    numbers = [c.invoice.number for c in group]
    # The respect rules choose the channels (an opted-out, bounced or missing one falls back).
    for choice in policy.plan_channels(case.customer, step.message_channels, step.template_code):
        channel = choice.channel
        if not channel:
            batch.event(case, "message.skipped", f"{choice.requested}: {choice.note}", step, channel=choice.requested)
            continue
        targets = addressing.resolve(
            case.customer, channel, audience=step.audience, extra_roles=prepared.escalation.get(step.pk, frozenset()),
            contacts=prepared.contacts.get(case.customer_id, []),
        )
        if not targets:
            batch.event(case, "message.skipped", f"No {channel} address on file", step, channel=channel)
            continue
        for target in targets:
            key = f"{base}:{channel}" + (f":ct{target.contact_id}" if target.contact_id else "")
            if key in prepared.queued_keys:
                batch.event(case, "message.consolidated", f"{step.template_code} ({channel}) covers this invoice",
                            step, channel=channel, invoices=numbers, leader=leader.pk)
                continue
            row = outbox.build(
                case.customer, channel=channel, template_code=step.template_code,
                context={**ctx, "contact_name": target.name}, dedupe_key=key,
                reference=f"case:{leader.pk}", send_after=batch.now, recipient=target.address, locale=target.locale,
            )
            if row is None:
                batch.event(case, "message.skipped", f"Not sent on {channel}", step, channel=channel)
                continue
            prepared.queued_keys.add(key)
            batch.notifications.append(row)
            note = "; ".join(n for n in (choice.note, getattr(row, "policy_note", "")) if n)
            batch.event(case, "message.queued",
                        f"{step.template_code} queued ({channel})" + (f": {note}" if note else ""), step,
                        channel=channel, template=step.template_code, contact=target.contact_id,
                        invoices=numbers, **({"note": note} if note else {}))
