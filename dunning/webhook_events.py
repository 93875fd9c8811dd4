"""Payloads of the outbound webhook events that dunning emits (docs/webhooks.md)."""

from __future__ import annotations

from customers.models import Customer
from dunning.models import DunningCase, case_key


def customer_payload(customer: Customer) -> dict:
    return {"id": customer.pk, "external_id": customer.external_id, "status": customer.status}


def case_payload(case: DunningCase, **extra) -> dict:
    invoice = case.invoice
    step = case.current_step
    return {
        "case": {
            "id": case.pk,
            "status": case.status,
            "campaign_id": case.campaign_id,
            "failed_at": case.failed_at,
            "decline_code": case.decline_code,
            "next_action_at": case.next_action_at,
            "closed_at": case.closed_at,
            "current_step": {"position": step.position, "action": step.action} if step else None,
        },
        "invoice": {
            "id": invoice.pk,
            "external_id": invoice.external_id,
            "number": invoice.number,
            "currency": invoice.currency,
            "amount_due": str(invoice.amount_due),
            "amount_remaining": str(invoice.amount_remaining),
        },
        "customer": customer_payload(case.customer),
        **extra,
    }


def for_batch(batch, cases: list[DunningCase]) -> list[tuple[str, dict, str]]:
    """Events for one engine batch (no query: everything is loaded)."""
    events = []
    for case in cases:
        if getattr(case, "held", False):
            continue  # its step did not run: a deferred retry waits (dunning.retries.apply_in_batch)
        step = case.current_step
        events.append(("case.step_completed", case_payload(case, step={"position": step.position,
                                                                       "action": step.action}),
                       case_key(case.pk, "step", step.pk, "done")))
        # The customer row was read before the batch's update: ACTIVE means this batch suspends them.
        if step.action == "suspend" and case.customer.status == Customer.Status.ACTIVE:
            suspended = customer_payload(case.customer) | {"status": Customer.Status.SUSPENDED}
            events.append(("customer.suspended", {"customer": suspended, "case_id": case.pk},
                           f"customer:{case.customer_id}:suspended:{case_key(case.pk)}"))
        if case.status == DunningCase.Status.EXHAUSTED:
            events.append(("case.exhausted", case_payload(case), case_key(case.pk, "exhausted")))
    return events
