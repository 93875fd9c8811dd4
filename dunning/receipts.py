"""Money received outside the gateway (an import row, an API call, a portal bank transfer notice).

``receive_payment`` records the payment once per idempotency key and applies it once: a re-imported
file or a repeated API call changes nothing. Partial amounts keep the case open for the rest; an
amount above the balance pays the invoice's open fees, then becomes customer credit.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from dunning.payments import record_payment


def receive_payment(
    invoice: Invoice,
    amount: Decimal,
    *,
    idempotency_key: str,
    source: str = PaymentAttempt.Source.EXTERNAL,
    reference: str = "",
    actor=None,
    at: datetime | None = None,
) -> tuple[PaymentAttempt, bool]:
    """Returns (the payment's attempt row, whether this call applied it)."""
    with transaction.atomic():
        attempt, created = billing.record_external_payment(
            invoice, amount, source=source, idempotency_key=idempotency_key, reference=reference
        )
        if created:
            record_payment(invoice, attempt.amount, attempt=attempt, actor=actor, at=at)
    return attempt, created
