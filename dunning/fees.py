"""Late fees and interest for invoices in dunning: the daily job and staff waivers (their merge data:
dunning.messages.fee_context).

The job may run any number of times: one-off fees have unique keys and interest is recomputed from
the invoice's payment history (billing.fees), so each fee is added once and nothing is lost when a
partial payment arrives. See docs/fees.md.
"""

from __future__ import annotations

import datetime
import logging
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import fees as billing_fees
from billing.fees import FeeTerms
from billing.models import Invoice, InvoiceFee
from dunning.cases import last_case
from dunning.errors import DunningError
from dunning.models import DunningCase, FeePolicy
from dunning.timeline import EventKind, actor_label, entry, log, log_entries

logger = logging.getLogger(__name__)

EU_POINTS = Decimal("8")


def _money_for(mapping: dict, currency: str) -> Decimal | None:
    value = (mapping or {}).get(currency)
    return Decimal(str(value)) if value not in (None, "") else None


def terms_for(policy: FeePolicy | None, invoice: Invoice, *, ignore_enabled: bool = False) -> FeeTerms | None:
    """The fees a policy charges on this invoice, or None (off, or not for this customer)."""
    if policy is None or not (policy.enabled or ignore_enabled):
        return None
    currency = invoice.currency
    cap = _money_for(policy.caps, currency)
    if policy.preset == FeePolicy.Preset.EU_B2B:
        # Directive 2011/7/EU covers transactions between undertakings only.
        if not invoice.customer.is_business:
            return None
        reference = policy.reference_rate if policy.reference_rate is not None else settings.FEES_EU_REFERENCE_RATE
        fixed = settings.FEES_EU_FIXED_FEE if currency == "EUR" else _money_for(policy.fixed_fees, currency)
        return FeeTerms(grace_days=policy.grace_days, fixed=fixed, fixed_kind=InvoiceFee.Kind.RECOVERY,
                        annual_rate=reference + EU_POINTS, cap=cap)
    if policy.business_only and not invoice.customer.is_business:
        return None
    terms = FeeTerms(grace_days=policy.grace_days, fixed=_money_for(policy.fixed_fees, currency),
                     percentage=policy.percentage, annual_rate=policy.annual_interest_rate, cap=cap)
    return terms if terms.charges_anything else None


def up_to_date(invoice: Invoice, terms: FeeTerms, today: datetime.date) -> bool:
    """True when a run today would change nothing (uses the prefetched ``invoice.fees``): the hourly
    runs after the first of the day then cost one query per chunk instead of work per invoice."""
    if today < billing_fees.first_chargeable_day(invoice.due_date, terms.grace_days):
        return True
    present = {fee.kind: fee for fee in invoice.fees.all()}
    if terms.fixed and terms.fixed_kind not in present:
        return False
    if terms.percentage > 0 and InvoiceFee.Kind.PERCENTAGE not in present:
        return False
    if terms.annual_rate > 0:
        interest = present.get(InvoiceFee.Kind.INTEREST)
        if interest is None or interest.final:
            return interest is not None
        # Completed days do not change, except by a back-dated payment: allocate_payment then
        # clears accrued_through so the next run recomputes.
        return interest.accrued_through == today - datetime.timedelta(days=1)
    return True


def _apply_chunk(work: list[tuple[DunningCase | None, Invoice, FeeTerms]], now: datetime.datetime) -> None:
    """Apply fees to a chunk of invoices and put what changed on their case timelines (bulk)."""
    if not work:
        return
    cases = {invoice.pk: case for case, invoice, _terms in work}
    items = [(invoice.pk, terms, now.astimezone(invoice.customer.tz).date(), invoice.customer.tz)
             for _case, invoice, terms in work]
    events = []
    with transaction.atomic():
        for changes in billing_fees.apply_fees_many(items):
            case = cases.get(changes.invoice.pk)
            if case is None:
                continue
            if changes.created:  # one timeline entry per invoice and run, listing the new fees
                events.append(entry(
                    case.pk, EventKind.FEE_ADDED,
                    "; ".join(f"{f.get_kind_display()}: {f.amount} {f.currency}" for f in changes.created),
                    at=now, actor="fees",
                    payload={"fees": [{"key": f.key, "kind": f.kind, "amount": str(f.amount)}
                                      for f in changes.created]}))
            interest = changes.interest
            if changes.finalised and interest is not None and interest not in changes.created:
                events.append(entry(case.pk, EventKind.FEE_INTEREST_FINAL,
                                    f"Interest stopped at {interest.amount} {interest.currency}", at=now,
                                    actor="fees", payload={"fee": interest.key, "amount": str(interest.amount)}))
        log_entries(events)


def apply_fees(now: datetime.datetime | None = None, chunk: int = 500) -> int:
    """The scheduled job: charge fees on invoices in dunning under an enabled policy, and finish the
    interest of invoices settled since the last run. Returns how many invoices were looked at.

    Works in chunks: one query reads a chunk of cases with their fees, invoices already up to date
    are skipped, the rest are locked and written with a fixed number of queries.
    """
    now = now or timezone.now()
    seen: set[int] = set()
    policies = {p.campaign_id: p for p in FeePolicy.objects.filter(enabled=True)}
    # Only the columns the decision needs: the chunk is re-read in full, locked, when fees change.
    cases = (
        DunningCase.objects.open()
        .filter(campaign_id__in=list(policies), invoice__status__in=[Invoice.Status.OPEN,
                                                                        Invoice.Status.UNCOLLECTIBLE])
        .select_related("invoice__customer")
        .only("id", "invoice_id", "campaign_id", "customer_id", "invoice__id", "invoice__customer_id",
              "invoice__currency", "invoice__due_date", "invoice__amount_due", "invoice__amount_paid",
              "invoice__status", "invoice__customer__id", "invoice__customer__timezone",
              "invoice__customer__is_business")
        .prefetch_related("invoice__fees")
        .order_by("pk")
    )
    work: list[tuple[DunningCase | None, Invoice, FeeTerms]] = []
    for case in cases.iterator(chunk_size=chunk):
        if case.invoice_id in seen:
            continue
        seen.add(case.invoice_id)
        terms = terms_for(policies[case.campaign_id], case.invoice)
        if terms is None or up_to_date(case.invoice, terms, now.astimezone(case.invoice.customer.tz).date()):
            continue
        work.append((case, case.invoice, terms))
        if len(work) >= chunk:
            _apply_chunk(work, now)
            work = []
    _apply_chunk(work, now)
    # Interest still running on invoices whose case closed (paid, cancelled): bring it up to the
    # payment day and mark it final. One-off fees are not added after the case closed.
    pending = (
        Invoice.objects.filter(fees__kind=InvoiceFee.Kind.INTEREST, fees__final=False)
        .exclude(dunning_cases__status__in=DunningCase.OPEN_STATUSES).select_related("customer").distinct()
    )
    work = []
    for invoice in pending.iterator(chunk_size=chunk):
        if invoice.pk in seen:
            continue
        seen.add(invoice.pk)
        case = last_case(invoice.pk)
        policy = getattr(case.campaign, "fee_policy", None) if case else None
        terms = terms_for(policy, invoice, ignore_enabled=True) or FeeTerms()
        work.append((case, invoice, FeeTerms(grace_days=terms.grace_days, annual_rate=terms.annual_rate,
                                             cap=terms.cap)))
        if len(work) >= chunk:
            _apply_chunk(work, now)
            work = []
    _apply_chunk(work, now)
    logger.info("late fees: %d invoices checked", len(seen))
    return len(seen)


def waive_fee(fee: InvoiceFee, *, actor, reason: str) -> InvoiceFee:
    """Staff waive a fee; the reason goes on the case timeline. A waived fee is never charged again."""
    reason = (reason or "").strip()
    if not reason:
        raise DunningError("Give a reason for waiving the fee")
    with transaction.atomic():
        # The invoice first, as the fee job does: it must not rewrite the fee we are waiving.
        Invoice.objects.select_for_update().filter(pk=fee.invoice_id).first()
        fee = InvoiceFee.objects.select_for_update().get(pk=fee.pk)
        if fee.status != InvoiceFee.Status.OPEN:
            raise DunningError(f"This fee is {fee.get_status_display().lower()}; only open fees can be waived")
        fee.status = InvoiceFee.Status.WAIVED
        fee.waived_at = timezone.now()
        fee.waived_by = actor_label(actor)
        fee.waive_reason = reason[:255]
        fee.save(update_fields=["status", "waived_at", "waived_by", "waive_reason", "updated_at"])
        case = last_case(fee.invoice_id)
        if case is not None:
            log(case, EventKind.FEE_WAIVED, f"{fee.get_kind_display()} of {fee.amount} {fee.currency} waived: {reason}",
                actor=actor, payload={"fee": fee.pk, "kind": fee.kind, "amount": str(fee.amount)})
    return fee
