"""Builders for the cockpit and report tests: cases written directly in a given state."""

from __future__ import annotations

import datetime
import itertools
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from billing.models import Invoice, PaymentAttempt
from dunning.models import CaseEvent, DunningCase
from tests.factories import CaseEventFactory, DunningCaseFactory, InvoiceFactory

_keys = itertools.count(1)


def utc(*args) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=datetime.UTC)


def make_case(customer, campaign, *, amount: str, failed_at, status="active", closed_at=None, decline="",
              current_step=None, currency=None, variant=None) -> DunningCase:
    amount = Decimal(amount)
    recovered = status == DunningCase.Status.RECOVERED
    invoice = InvoiceFactory(
        customer=customer, currency=currency or customer.currency, amount_due=amount,
        amount_paid=amount if recovered else Decimal("0"),
        status=Invoice.Status.PAID if recovered else Invoice.Status.OPEN,
        issued_at=failed_at.date(), due_date=failed_at.date(),
    )
    return DunningCaseFactory(
        invoice=invoice, customer=customer, campaign=campaign, status=status, failed_at=failed_at,
        currency=invoice.currency, recovered_amount=amount if recovered else None,
        closed_at=closed_at, decline_code=decline, current_step=current_step, variant=variant,
    )


def make_attempt(case: DunningCase, at, *, ok: bool, source="retry", outcome=None) -> PaymentAttempt:
    return PaymentAttempt.objects.create(
        invoice=case.invoice, amount=case.invoice.amount_due, currency=case.invoice.currency,
        outcome=outcome or ("succeeded" if ok else "failed"), source=source,
        decline_code="" if ok else "insufficient_funds", idempotency_key=f"test-{next(_keys)}", created_at=at,
    )


def message_event(case: DunningCase, channel: str, at=None) -> CaseEvent:
    return CaseEventFactory(case=case, kind="message.queued", at=at or case.failed_at,
                            payload={"channel": channel, "template": "reminder"})


def staff_user(username: str, group: str | None = None, *, superuser: bool = False):
    User = get_user_model()
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.com", "pw")
    user = User.objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user
