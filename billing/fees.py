"""Late fees and interest as separate line items, and how a received payment is allocated.

Accounting (docs/fees.md): Invoice.amount_due/amount_paid remain the invoice's own figures. A payment
for an invoice pays its remaining principal first, then its open fees (oldest first); the rest is
kept as customer credit. What is owed for an invoice is ``amount_remaining + open fees``.

Nothing here knows about campaigns: dunning.fees turns a campaign's FeePolicy into FeeTerms and runs
the daily job. Every function that changes fees locks the invoice row first, so the job and a payment
arriving at the same moment are serialised.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing.ledger_models import CustomerCredit, InvoiceFee, PaymentAllocation
from billing.models import Invoice
from billing.money import to_amount

ZERO = Decimal("0")
DAYS_PER_YEAR = Decimal("365")


@dataclass(frozen=True)
class FeeTerms:
    """What to charge on one late invoice, already resolved for its currency and customer."""

    grace_days: int = 0
    fixed: Decimal | None = None
    fixed_kind: str = InvoiceFee.Kind.FIXED
    percentage: Decimal = ZERO
    annual_rate: Decimal = ZERO
    cap: Decimal | None = None

    @property
    def charges_anything(self) -> bool:
        return bool(self.fixed) or self.percentage > 0 or self.annual_rate > 0


def fee_key(invoice_id: int, kind: str) -> str:
    return f"fee:{invoice_id}:{kind}"


def first_chargeable_day(due_date: datetime.date, grace_days: int) -> datetime.date:
    """Nothing is charged on the due date or during the grace period; interest counts from here."""
    return due_date + datetime.timedelta(days=grace_days + 1)


# --- Interest from the overdue history ------------------------------------------------------------

def principal_history(invoice, tz, rows=None) -> tuple[Decimal, list[tuple[datetime.date, Decimal]]]:
    """(balance before any recorded payment, [(local day, amount paid on the invoice)...]).

    Payments recorded before allocations existed (e.g. amount_paid given at import) have no date:
    they count as paid before the invoice fell due, which never overcharges the customer.
    """
    if rows is None:
        rows = list(invoice.allocations.filter(to_invoice__gt=0).values_list("received_at", "to_invoice"))
    dated = sum((amount for _at, amount in rows), ZERO)
    undated = max(invoice.amount_paid - dated, ZERO)
    payments = sorted((at.astimezone(tz).date(), amount) for at, amount in rows)
    return invoice.amount_due - undated, payments


def accrued_interest(
    opening_balance: Decimal,
    payments: list[tuple[datetime.date, Decimal]],
    start: datetime.date,
    through: datetime.date,
    annual_rate: Decimal,
    currency: str,
) -> Decimal:
    """Simple interest accrued daily: for each day from ``start`` to ``through`` (inclusive),
    balance outstanding that day x rate / 365. A payment lowers the balance from its day on."""
    if through < start or annual_rate <= 0:
        return to_amount(ZERO, currency)
    daily = annual_rate / Decimal(100) / DAYS_PER_YEAR
    balance = opening_balance
    # Payments made before the first chargeable day only lower the starting balance.
    pending = []
    for day, amount in payments:
        if day <= start:
            balance -= amount
        else:
            pending.append((day, amount))
    total = ZERO
    cursor = start
    for day, amount in pending:
        if day > through:
            break
        total += max(balance, ZERO) * (day - cursor).days
        balance -= amount
        cursor = day
    total += max(balance, ZERO) * ((through - cursor).days + 1)
    return to_amount(total * daily, currency)


# --- Applying fees ---------------------------------------------------------------------------------

@dataclass
class FeeChanges:
    invoice: object
    created: list[InvoiceFee] = field(default_factory=list)
    interest: InvoiceFee | None = None
    updated: bool = False
    finalised: bool = False


def _capped(amount: Decimal, terms: FeeTerms, used: Decimal) -> Decimal:
    if terms.cap is None:
        return amount
    return max(min(amount, terms.cap - used), ZERO)


def plan_fees(invoice, terms: FeeTerms, today: datetime.date, existing: list[InvoiceFee],
              payments: list[tuple[datetime.datetime, Decimal]], tz) -> FeeChanges:
    """Decide, without any query, which fees to add and what the interest row becomes today.

    ``existing`` are the invoice's fee rows, ``payments`` its allocations (received_at, to_invoice).
    New rows are returned unsaved in ``created``; an existing interest row is changed in place.
    """
    changes = FeeChanges(invoice=invoice)
    start = first_chargeable_day(invoice.due_date, terms.grace_days)
    if today < start:
        return changes
    by_kind = {fee.kind: fee for fee in existing}
    used = sum((f.amount for f in existing if f.status != InvoiceFee.Status.WAIVED
                and f.kind != InvoiceFee.Kind.INTEREST), ZERO)
    unpaid = invoice.amount_remaining > 0 and invoice.status in (invoice.Status.OPEN, invoice.Status.UNCOLLECTIBLE)
    one_offs = []
    if terms.fixed:
        one_offs.append((terms.fixed_kind, to_amount(terms.fixed, invoice.currency)))
    if terms.percentage > 0:
        one_offs.append((InvoiceFee.Kind.PERCENTAGE,
                         to_amount(invoice.amount_remaining * terms.percentage / 100, invoice.currency)))
    for kind, amount in one_offs:
        if kind in by_kind or not unpaid:
            continue
        amount = _capped(amount, terms, used)
        if amount <= 0:
            continue
        used += amount
        fee = InvoiceFee(invoice=invoice, key=fee_key(invoice.pk, kind), kind=kind, amount=amount,
                         currency=invoice.currency, description=InvoiceFee.Kind(kind).label)
        changes.created.append(fee)
        by_kind[kind] = fee
    interest = by_kind.get(InvoiceFee.Kind.INTEREST)
    rate = interest.rate if interest is not None and interest.rate is not None else terms.annual_rate
    if not rate or rate <= 0 or (interest is None and not unpaid) or (interest is not None and interest.final):
        return changes
    # Only completed days count: today's share depends on payments that may still arrive today, and
    # counting it early could charge interest on money paid later the same day.
    through = today - datetime.timedelta(days=1)
    opening, dated = principal_history(invoice, tz, payments)
    amount = _capped(accrued_interest(opening, dated, start, through, rate, invoice.currency), terms, used)
    settled = invoice.amount_remaining <= 0 or invoice.status == invoice.Status.VOID
    if interest is None:
        if amount > 0:
            interest = InvoiceFee(invoice=invoice, key=fee_key(invoice.pk, InvoiceFee.Kind.INTEREST),
                                  kind=InvoiceFee.Kind.INTEREST, amount=amount, currency=invoice.currency,
                                  rate=rate, accrued_through=through, final=settled,
                                  description=f"{InvoiceFee.Kind.INTEREST.label} ({rate.normalize()}% a year)")
            changes.created.append(interest)
            changes.interest = interest
        return changes
    changes.interest = interest
    if interest.status != InvoiceFee.Status.WAIVED:  # waived stays waived; it only stops once settled
        # Recomputed from the dated history; completed days never change, so it only grows.
        interest.amount = amount
        interest.accrued_through = through
        interest.status = InvoiceFee.Status.PAID if interest.amount_paid >= amount else InvoiceFee.Status.OPEN
    changes.finalised = settled
    interest.final = settled
    changes.updated = True
    return changes


def apply_fees_many(items: list[tuple[int, FeeTerms, datetime.date, object]]) -> list[FeeChanges]:
    """Apply fees to many invoices ([(invoice_id, terms, today, tz)]) with a fixed number of queries.

    Locks the invoices (in id order, so concurrent runs never deadlock) for the whole chunk; a
    payment for one of them waits, then sees the new fees. Idempotent: re-running changes nothing.
    """
    if not items:
        return []
    ids = [invoice_id for invoice_id, *_rest in items]
    with transaction.atomic():
        invoices = {inv.pk: inv for inv in Invoice.objects.select_for_update().filter(pk__in=ids).order_by("pk")}
        existing: dict[int, list[InvoiceFee]] = {}
        for fee in InvoiceFee.objects.filter(invoice_id__in=ids):
            existing.setdefault(fee.invoice_id, []).append(fee)
        payments: dict[int, list] = {}
        for invoice_id, at, amount in PaymentAllocation.objects.filter(
            invoice_id__in=ids, to_invoice__gt=0
        ).values_list("invoice_id", "received_at", "to_invoice"):
            payments.setdefault(invoice_id, []).append((at, amount))
        results = []
        for invoice_id, terms, today, tz in items:
            invoice = invoices.get(invoice_id)
            if invoice is None:
                continue
            results.append(plan_fees(invoice, terms, today, existing.get(invoice_id, []),
                                     payments.get(invoice_id, []), tz))
        InvoiceFee.objects.bulk_create([fee for r in results for fee in r.created])
        now = timezone.now()
        updated = [r.interest for r in results if r.updated]
        for fee in updated:
            fee.updated_at = now
        InvoiceFee.objects.bulk_update(updated, ["amount", "accrued_through", "final", "status", "updated_at"])
    return results


def apply_fees(invoice, terms: FeeTerms, today: datetime.date, *, tz) -> FeeChanges:
    """Add the one-off fees once and recompute interest up to yesterday, for one invoice."""
    results = apply_fees_many([(invoice.pk, terms, today, tz)])
    return results[0] if results else FeeChanges(invoice=invoice)


# --- Reading (messages, portal, API) --------------------------------------------------------------

def open_fees(invoice) -> list[InvoiceFee]:
    """Fees still to pay on an invoice, oldest first (for the portal and messages)."""
    return [f for f in InvoiceFee.objects.filter(invoice=invoice, status=InvoiceFee.Status.OPEN).order_by("id")
            if f.amount_open > 0]


def open_fees_by_invoice(invoice_ids) -> dict[int, list[InvoiceFee]]:
    """The same for many invoices in one query (the engine's batches)."""
    found: dict[int, list[InvoiceFee]] = {}
    for fee in InvoiceFee.objects.filter(invoice_id__any=list(invoice_ids), status=InvoiceFee.Status.OPEN).order_by(
        "id"
    ):
        if fee.amount_open > 0:
            found.setdefault(fee.invoice_id, []).append(fee)
    return found


def fees_total(fees: list[InvoiceFee]) -> Decimal:
    return sum((f.amount_open for f in fees), ZERO)


def amount_owed(invoice) -> Decimal:
    """What the customer owes for this invoice: its remaining principal plus open fees."""
    return invoice.amount_remaining + fees_total(open_fees(invoice))


def credit_balance(customer, currency: str) -> Decimal:
    total = CustomerCredit.objects.filter(customer=customer, currency=currency).aggregate(s=Sum("amount"))["s"]
    return total or ZERO


# --- Allocation (called by billing.services.apply_payment with the invoice locked) ----------------

def allocate_payment(invoice, amount: Decimal, to_invoice: Decimal, at) -> PaymentAllocation:
    """Record a received payment: principal (already added by the caller), then open fees, then credit."""
    rest = amount - to_invoice
    to_fees = ZERO
    if rest > 0:
        for fee in InvoiceFee.objects.select_for_update().filter(
            invoice=invoice, status=InvoiceFee.Status.OPEN
        ).order_by("id"):
            take = min(rest, fee.amount_open)
            if take <= 0:
                continue
            fee.amount_paid += take
            if fee.amount_paid >= fee.amount:
                fee.status = InvoiceFee.Status.PAID
            fee.save(update_fields=["amount_paid", "status", "updated_at"])
            rest -= take
            to_fees += take
            if rest <= 0:
                break
    # The history changed: the interest is recomputed on the job's next run (even the same day).
    InvoiceFee.objects.filter(invoice=invoice, kind=InvoiceFee.Kind.INTEREST, final=False).update(
        accrued_through=None)
    allocation = PaymentAllocation.objects.create(
        invoice=invoice, received_at=at, amount=amount, currency=invoice.currency,
        to_invoice=to_invoice, to_fees=to_fees, to_credit=max(rest, ZERO),
    )
    if rest > 0:
        CustomerCredit.objects.create(
            customer_id=invoice.customer_id, amount=rest, currency=invoice.currency, invoice=invoice,
            allocation=allocation, note=f"Overpayment of invoice {invoice.number}", created_at=at,
        )
    return allocation
