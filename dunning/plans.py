"""Payment plans: split the balance in dunning into 2-6 monthly instalments.

A request within the staff-set limits for its currency (PlanLimit) is accepted at once; any other
request waits in the staff work queue. While a plan is active its cases are paused; instalments are
charged on schedule by ``charge_due_instalments`` and a missed one ends the plan and resumes dunning.
"""

from __future__ import annotations

import calendar
import datetime
import logging
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from django.db import transaction
from django.utils import timezone

from billing import attempts
from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from billing.money import format_money, minor_unit_exponent, to_amount
from customers.models import Customer
from dunning.cases import lock_open_case, pause_case, resume_case
from dunning.errors import DunningError
from dunning.models import DunningCase, WorkItem
from dunning.payments import SETTLEMENT
from dunning.plan_models import MAX_MONTHS, MIN_MONTHS, Instalment, PaymentPlan, PlanLimit
from dunning.timeline import EventKind, log
from dunning.workqueue import create_work_item

logger = logging.getLogger(__name__)


class PlanError(DunningError):
    pass


@dataclass(frozen=True)
class Quote:
    currency: str
    total: Decimal
    months: int
    amounts: list[Decimal]
    within_limits: bool
    invoices: list[Invoice]


def add_months(day: datetime.date, months: int) -> datetime.date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return datetime.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def split(total: Decimal, months: int, currency: str) -> list[Decimal]:
    """Equal instalments rounded down to the currency's minor unit; the last one takes the rest."""
    unit = minor_unit_exponent(currency)
    each = (total / months).quantize(unit, rounding=ROUND_DOWN)
    return [each] * (months - 1) + [to_amount(total - each * (months - 1), currency)]


def plan_invoices(customer: Customer, currency: str) -> list[Invoice]:
    """The invoices a plan covers: the customer's open invoices in dunning, in this currency."""
    return list(
        Invoice.objects.open()
        .filter(customer=customer, currency=currency,
                dunning_cases__status__in=DunningCase.OPEN_STATUSES)
        .distinct()
        .order_by("due_date", "id")
    )


def currencies_in_dunning(customer: Customer) -> list[str]:
    return sorted(
        set(DunningCase.objects.open().filter(customer=customer).values_list("invoice__currency", flat=True))
    )


def quote(customer: Customer, months: int, currency: str | None = None) -> Quote:
    currencies = currencies_in_dunning(customer)
    currency = currency or (currencies[0] if currencies else customer.currency)
    invoices = plan_invoices(customer, currency)
    total = to_amount(sum((inv.amount_remaining for inv in invoices), Decimal("0")), currency)
    if not MIN_MONTHS <= months <= MAX_MONTHS:
        raise PlanError(f"A plan has {MIN_MONTHS} to {MAX_MONTHS} monthly instalments")
    amounts = split(total, months, currency) if total > 0 else []
    limit = PlanLimit.objects.filter(currency=currency).first()
    within = bool(
        limit and amounts and months <= limit.max_months and min(amounts) >= limit.min_instalment
    )
    return Quote(currency, total, months, amounts, within, invoices)


def open_plan(customer: Customer) -> PaymentPlan | None:
    return customer.payment_plans.filter(status__in=PaymentPlan.OPEN_STATUSES).first()


def _cases(plan: PaymentPlan) -> list[DunningCase]:
    return list(DunningCase.objects.open().filter(invoice__in=plan.invoices.all()).order_by("id"))


def _log_all(plan: PaymentPlan, kind: str, message: str, *, actor=None, cases=None) -> None:
    for case in cases if cases is not None else _cases(plan):
        log(case, kind, message, actor=actor, payload={"plan": plan.pk})


def request_plan(customer: Customer, months: int, *, currency: str | None = None, actor="portal") -> PaymentPlan:
    """The customer asks for a plan: accepted within the limits, else queued for staff approval."""
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        if open_plan(customer) is not None:
            raise PlanError("There is already a payment plan for this account")
        q = quote(customer, months, currency)
        if q.total <= 0:
            raise PlanError("Nothing is overdue, so there is nothing to split")
        plan = PaymentPlan.objects.create(customer=customer, currency=q.currency, total=q.total, months=months)
        plan.invoices.set(q.invoices)
        amount_text = format_money(q.total, q.currency)
        _log_all(plan, EventKind.PLAN_REQUESTED, f"Payment plan requested: {amount_text} in {months} instalments",
                 actor=actor)
        if q.within_limits:
            plan.auto_approved = True
            plan.save(update_fields=["auto_approved", "updated_at"])
            _activate(plan, actor=actor)
        else:
            cases = _cases(plan)
            create_work_item(
                customer, WorkItem.Kind.PLAN_REQUEST,
                f"Payment plan: {amount_text} in {months} instalments (outside the limits)",
                body=f"{customer} asked to pay {amount_text} in {months} monthly instalments. "
                     "Approve or reject it under Dunning > Payment plans.",
                case=cases[0] if cases else None, actor=actor, dedupe_key=f"plan:{plan.pk}",
            )
    return plan


def _activate(plan: PaymentPlan, *, actor=None) -> None:
    """Schedule the instalments (the first one today) and pause the plan's cases."""
    today = plan.customer.local_time().date()
    amounts = split(plan.total, plan.months, plan.currency)
    Instalment.objects.bulk_create(
        Instalment(plan=plan, number=i + 1, due_date=add_months(today, i), amount=amount)
        for i, amount in enumerate(amounts)
    )
    plan.status = PaymentPlan.Status.ACTIVE
    plan.save(update_fields=["status", "updated_at"])
    for case in _cases(plan):
        if case.status == DunningCase.Status.ACTIVE:
            pause_case(case, actor=actor, reason=f"Payment plan #{plan.pk} accepted")
    _log_all(plan, EventKind.PLAN_ACTIVATED, f"Payment plan #{plan.pk} active: {plan.months} instalments", actor=actor)


def approve_plan(plan: PaymentPlan, *, actor=None) -> PaymentPlan:
    with transaction.atomic():
        # Cases, invoices, then the plan: the order a payment takes (record_payment locks the open case
        # and the invoice, then closes pending requests), so a payment arriving meanwhile waits for this
        # decision or wins it.
        for invoice_id in plan.invoices.order_by("id").values_list("id", flat=True):
            lock_open_case(invoice_id)
        invoices = list(Invoice.objects.select_for_update().filter(payment_plans=plan).order_by("id"))
        plan = PaymentPlan.objects.select_for_update().select_related("customer").get(pk=plan.pk)
        if plan.status != PaymentPlan.Status.PENDING:
            raise PlanError(f"Plan #{plan.pk} is {plan.get_status_display().lower()}, not waiting for approval")
        closed = [inv for inv in invoices if inv.status != Invoice.Status.OPEN]
        if closed:
            raise PlanError(f"Plan #{plan.pk} cannot be approved: "
                            + ", ".join(f"invoice {inv.number} is {inv.get_status_display().lower()}"
                                        for inv in closed))
        plan.decided_by = actor if actor is not None and not isinstance(actor, str) else None
        plan.decided_at = timezone.now()
        plan.save(update_fields=["decided_by", "decided_at", "updated_at"])
        _activate(plan, actor=actor)
        _close_work_item(plan)
    return plan


def reject_plan(plan: PaymentPlan, *, actor=None) -> PaymentPlan:
    with transaction.atomic():
        plan = PaymentPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.status != PaymentPlan.Status.PENDING:
            raise PlanError(f"Plan #{plan.pk} is {plan.get_status_display().lower()}, not waiting for approval")
        now = timezone.now()
        plan.status = PaymentPlan.Status.REJECTED
        plan.decided_by = actor if actor is not None and not isinstance(actor, str) else None
        plan.decided_at = plan.closed_at = now
        plan.save(update_fields=["status", "decided_by", "decided_at", "closed_at", "updated_at"])
        _log_all(plan, EventKind.PLAN_REJECTED, f"Payment plan #{plan.pk} rejected", actor=actor)
        _close_work_item(plan)
    return plan


def close_requests_for_paid_invoice(invoice: Invoice, *, at: datetime.datetime | None = None, actor=None) -> int:
    """The invoice was paid in full (dunning.payments.invoice_paid): a request still waiting for approval
    splits a balance that is no longer owed, so it is closed and leaves the staff work queue."""
    at = at or timezone.now()
    closed = 0
    for plan in PaymentPlan.objects.select_for_update().filter(invoices=invoice, status=PaymentPlan.Status.PENDING):
        plan.status = PaymentPlan.Status.CANCELLED
        plan.closed_at = at
        plan.save(update_fields=["status", "closed_at", "updated_at"])
        # The paid invoice's case has just closed; it carries the note too, beside the plan's open cases.
        cases = _cases(plan)
        paid_case = DunningCase.objects.filter(invoice=invoice).order_by("-id").first()
        if paid_case is not None and paid_case not in cases:
            cases.append(paid_case)
        _log_all(plan, EventKind.PLAN_CLOSED,
                 f"Payment plan request #{plan.pk} closed without a decision: invoice {invoice.number} was paid",
                 actor=actor, cases=cases)
        _close_work_item(plan)
        closed += 1
    return closed


def _close_work_item(plan: PaymentPlan) -> None:
    WorkItem.objects.filter(dedupe_key=f"plan:{plan.pk}").exclude(status=WorkItem.Status.DONE).update(
        status=WorkItem.Status.DONE, done_at=timezone.now()
    )


# --- Charging on schedule -------------------------------------------------------------------------

# An instalment still "charging" this long after it was claimed belongs to a worker that died.
STALE_CLAIM = datetime.timedelta(minutes=10)


def claim_due_instalments(today: datetime.date, limit: int = 200, exclude=(), now=None) -> list[int]:
    with transaction.atomic():
        ids = list(
            Instalment.objects.filter(status=Instalment.Status.SCHEDULED, due_date__lte=today,
                                      plan__status=PaymentPlan.Status.ACTIVE)
            .exclude(pk__in=list(exclude))
            .order_by("due_date", "id")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        Instalment.objects.filter(pk__in=ids, status=Instalment.Status.SCHEDULED).update(
            status=Instalment.Status.CHARGING, claimed_at=now or timezone.now()
        )
    return ids


def _attempts_for(instalment: Instalment):
    return PaymentAttempt.objects.filter(idempotency_key__startswith=f"plan:{instalment.pk}:")


def _create_attempts(instalment: Instalment, now: datetime.datetime) -> list[PaymentAttempt]:
    """Spread the instalment over the plan's invoices, oldest first: one attempt per invoice touched."""
    plan = instalment.plan
    method = plan.customer.default_payment_method
    remaining = instalment.amount
    made = []
    for invoice in plan.invoices.filter(status=Invoice.Status.OPEN).order_by("due_date", "id"):
        if remaining <= 0:
            break
        portion = min(remaining, invoice.amount_remaining)
        if portion <= 0:
            continue
        attempt = billing.new_attempt(invoice, payment_method=method, source=PaymentAttempt.Source.RETRY,
                                      amount=portion, idempotency_key=f"plan:{instalment.pk}:{invoice.pk}")
        attempt.lease_until = now + datetime.timedelta(minutes=5)  # processed right here
        saved, _created = PaymentAttempt.objects.get_or_create(
            idempotency_key=attempt.idempotency_key,
            defaults={f.name: getattr(attempt, f.name) for f in PaymentAttempt._meta.concrete_fields
                      if f.name not in ("id", "idempotency_key")},
        )
        made.append(saved)
        remaining -= portion
    return made


def charge_instalment(instalment_id: int, now: datetime.datetime | None = None) -> Instalment:
    now = now or timezone.now()
    instalment = Instalment.objects.select_related("plan__customer").get(pk=instalment_id)
    for attempt in list(_attempts_for(instalment)) or _create_attempts(instalment, now):
        if attempt.outcome == PaymentAttempt.Outcome.PENDING:
            attempts.process(attempt, SETTLEMENT, now=now)
    return settle_instalment(instalment, now)


def settle_instalment(instalment: Instalment, now: datetime.datetime) -> Instalment:
    """Paid when every attempt succeeded, missed when one failed; a pending one waits for the next run.

    An instalment is paid only by a payment: with no attempt at all (the plan's invoices were paid some
    other way) it is cancelled, never shown as paid.
    """
    outcomes = set(_attempts_for(instalment).values_list("outcome", flat=True))
    with transaction.atomic():
        instalment = Instalment.objects.select_for_update().select_related("plan__customer").get(pk=instalment.pk)
        if instalment.status != Instalment.Status.CHARGING:
            return instalment
        plan = instalment.plan
        if PaymentAttempt.Outcome.PENDING in outcomes:
            return instalment
        if PaymentAttempt.Outcome.FAILED in outcomes:
            failed = _attempts_for(instalment).filter(outcome=PaymentAttempt.Outcome.FAILED).first()
            instalment.status = Instalment.Status.MISSED
            instalment.decline_code = failed.decline_code if failed else ""
            instalment.save(update_fields=["status", "decline_code"])
            _default(plan, instalment, now)
            return instalment
        if outcomes == {PaymentAttempt.Outcome.SUCCEEDED}:
            instalment.status = Instalment.Status.PAID
            instalment.paid_at = now
            instalment.save(update_fields=["status", "paid_at"])
            _log_all(plan, EventKind.PLAN_INSTALMENT_PAID,
                     f"Instalment {instalment.number}/{plan.months} paid "
                     f"({format_money(instalment.amount, plan.currency)})")
        else:
            instalment.status = Instalment.Status.CANCELLED
            instalment.save(update_fields=["status"])
            _log_all(plan, EventKind.PLAN_INSTALMENT_CANCELLED,
                     f"Instalment {instalment.number}/{plan.months} not charged: nothing of the plan is left to pay")
        unpaid = plan.invoices.filter(status=Invoice.Status.OPEN).exists()
        if not unpaid or not plan.instalments.exclude(status=Instalment.Status.PAID).exists():
            plan.instalments.filter(status=Instalment.Status.SCHEDULED).update(status=Instalment.Status.CANCELLED)
            plan.status = PaymentPlan.Status.COMPLETED
            plan.closed_at = now
            plan.save(update_fields=["status", "closed_at", "updated_at"])
            # Rounding leftovers or a plan that ended early: dunning takes over whatever is still open.
            for case in _cases(plan):
                if case.status == DunningCase.Status.PAUSED:
                    resume_after_plan(case, now)
    return instalment


def _default(plan: PaymentPlan, instalment: Instalment, now: datetime.datetime) -> None:
    plan.status = PaymentPlan.Status.DEFAULTED
    plan.closed_at = now
    plan.save(update_fields=["status", "closed_at", "updated_at"])
    plan.instalments.filter(status=Instalment.Status.SCHEDULED).update(status=Instalment.Status.CANCELLED)
    cases = _cases(plan)
    _log_all(plan, EventKind.PLAN_DEFAULTED,
             f"Instalment {instalment.number} missed ({instalment.decline_code or 'declined'}); dunning resumes",
             cases=cases)
    for case in cases:
        if case.status == DunningCase.Status.PAUSED:
            resume_after_plan(case, now)


def resume_after_plan(case: DunningCase, now: datetime.datetime) -> None:
    """Resume a case paused for a plan where it stopped: the next step runs now and later steps keep
    their spacing (step offsets count from failed_at, so it moves by as long as the next step was overdue)."""
    with transaction.atomic():
        locked = DunningCase.objects.select_for_update().get(pk=case.pk)
        if locked.status != DunningCase.Status.PAUSED:
            return
        if locked.next_action_at is not None and locked.next_action_at < now:
            shift = now - locked.next_action_at
            locked.failed_at += shift
            locked.next_action_at = now
            locked.save(update_fields=["failed_at", "next_action_at", "updated_at"])
            log(locked, EventKind.CASE_RESCHEDULED, f"Steps moved {shift.days} day(s) later after the plan ended",
                payload={"shift_seconds": int(shift.total_seconds())})
        resume_case(locked)


def charge_due_instalments(now: datetime.datetime | None = None) -> int:
    """Scheduled: charge every instalment that is due. Idempotent: claimed rows, keyed attempts."""
    now = now or timezone.now()
    done = 0
    # Instalments left "charging" by a run that died are settled (or re-sent with the same keys, so
    # the gateway answers with the first outcome rather than charging again).
    with transaction.atomic():
        stale = list(
            Instalment.objects.filter(status=Instalment.Status.CHARGING, claimed_at__lt=now - STALE_CLAIM)
            .select_for_update(skip_locked=True).values_list("pk", flat=True)
        )
        Instalment.objects.filter(pk__in=stale).update(claimed_at=now)
    for pk in stale:
        charge_instalment(pk, now)
    # Due dates are calendar days in the customer's time zone; UTC+14 is the earliest day anywhere.
    horizon = (now + datetime.timedelta(hours=14)).date()
    skipped: set[int] = set()
    while ids := claim_due_instalments(horizon, exclude=skipped, now=now):
        for pk in ids:
            instalment = Instalment.objects.select_related("plan__customer").get(pk=pk)
            if instalment.due_date > instalment.plan.customer.local_time(now).date():
                # Not yet due where the customer lives: back to the schedule.
                Instalment.objects.filter(pk=pk).update(status=Instalment.Status.SCHEDULED)
                skipped.add(pk)
                continue
            charge_instalment(pk, now)
            done += 1
    return done
