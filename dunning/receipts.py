"""Money received outside our own charges: the billing system's report (REST API, CSV import), a
gateway webhook, staff marking a case paid.

Every such payment goes through ``receive_payment``: billing records it as a succeeded payment
attempt, once per idempotency key (a re-imported file, a repeated API call or webhook changes
nothing), and applies it to the invoice; dunning reacts through ``record_payment`` (a partial amount
keeps the case open for the rest; paid in full, the case is recovered and ``invoice_paid`` is sent;
an amount above the balance pays the invoice's open fees, then becomes customer credit).

It lives in dunning, not billing, for the lock order of every payment (case, then invoice, then
attempt; dunning.cases.lock_open_case): the invoice's open case is locked before billing locks
the invoice, and billing knows nothing of cases.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction

from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from dunning.cases import lock_open_case
from dunning.errors import DunningError
from dunning.models import DunningCase
from dunning.payments import record_payment


@dataclass(frozen=True)
class Receipt:
    invoice: Invoice  # as locked and updated by this call
    # The payment's attempt row; None when nothing was left to receive (see receive_payment).
    attempt: PaymentAttempt | None
    created: bool  # False: this key was received before, and nothing was applied again
    case: DunningCase | None = None  # the invoice's open case, if it had one


def receive_payment(
    invoice: Invoice,
    amount: Decimal | None = None,
    *,
    idempotency_key: str,
    paid_total: Decimal | None = None,
    up_to_balance: bool = False,
    source: str = PaymentAttempt.Source.EXTERNAL,
    reference: str = "",
    actor=None,
    at: datetime | None = None,
) -> Receipt:
    """Record and apply a payment received for ``invoice``, once per ``idempotency_key``.

    The amount is read with the invoice locked: ``amount``, or the remaining balance when None, or,
    for a report of the invoice's cumulative total (``paid_total``: a gateway's invoice.paid, an
    imported ``amount_paid``), what that total adds to what is already paid. ``up_to_balance``: never
    more than the balance (a report that may repeat what another report already counted). When that
    leaves nothing to receive, nothing is written and the receipt's attempt is None.
    """
    with transaction.atomic():
        case = lock_open_case(invoice.pk)
        invoice = Invoice.objects.select_for_update(of=("self",)).select_related("customer").get(pk=invoice.pk)
        if paid_total is not None:
            amount = paid_total - invoice.amount_paid
        elif amount is None:
            amount = invoice.amount_remaining
        if up_to_balance:
            amount = min(amount, invoice.amount_remaining)
        if amount <= 0:
            return Receipt(invoice, None, False, case)
        attempt, created = billing.record_external_payment(
            invoice, amount, source=source, idempotency_key=idempotency_key, reference=reference
        )
        if created:
            record_payment(invoice, attempt.amount, attempt=attempt, actor=actor, at=at)
            invoice.refresh_from_db()
    return Receipt(invoice, attempt, created, case)


def mark_paid(case: DunningCase, *, actor=None, reference: str = "") -> DunningCase:
    """Staff record that the case's balance was paid outside the gateway (bank transfer, cheque)."""
    with transaction.atomic():
        locked = lock_open_case(case.invoice_id)
        if locked is None or locked.pk != case.pk:
            case.refresh_from_db(fields=["status"])
            raise DunningError(f"Case #{case.pk} is {case.status}")
        receive_payment(case.invoice, idempotency_key=f"mark-paid-{case.pk}-{uuid.uuid4().hex}",
                        source=PaymentAttempt.Source.MANUAL, reference=reference, actor=actor)
    case.refresh_from_db()
    return case
