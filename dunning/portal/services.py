"""What the customer portal does, as plain functions: the views only call these.

Each function that changes something takes the actor of the link it came through
(``access.PortalLink.actor``): "portal" for the customer's own link, the staff user for a link
minted in the admin. Timeline events written here note a staff link in their payload.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from billing import attempts
from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from customers import services as customers
from customers.models import Customer, PaymentMethod
from dunning import payments, tasks
from dunning.errors import DunningError
from dunning.messages import upcoming_dates
from dunning.models import CampaignStep, DunningCase, WorkItem, case_key
from dunning.plan_models import PaymentPlan
from dunning.portal.access import PORTAL_ACTOR
from dunning.timeline import EventKind, log
from dunning.workqueue import create_work_item
from notifications import services as outbox
from notifications.models import Channel

logger = logging.getLogger(__name__)

ACTIVE, AT_RISK, SUSPENDED = "active", "at_risk", "suspended"
VIA_STAFF_LINK = "staff-minted portal link"


def _payload(actor, payload: dict | None = None) -> dict:
    """Timeline payload: an action through a staff member's link says so beside the actor."""
    payload = dict(payload or {})
    if actor != PORTAL_ACTOR:
        payload["via"] = VIA_STAFF_LINK
    return payload


def account_status(customer: Customer) -> str:
    if customer.status == Customer.Status.SUSPENDED:
        return SUSPENDED
    if DunningCase.objects.open().filter(customer=customer).exists():
        return AT_RISK
    return ACTIVE


@dataclass
class InvoiceRow:
    invoice: Invoice
    case: DunningCase | None
    retry_on: datetime.date | None = None
    suspend_on: datetime.date | None = None
    on_plan: bool = False
    paying: bool = False


def next_events(case: DunningCase, customer: Customer,
                campaign_steps: list[CampaignStep] | None = None) -> tuple[datetime.date | None, datetime.date | None]:
    """(next retry, suspension) as calendar days where the customer lives, from the remaining steps."""
    if case.status != DunningCase.Status.ACTIVE or case.next_step is None:
        return None, None
    if campaign_steps is None:
        campaign_steps = CampaignStep.objects.by_campaign([case.campaign_id]).get(case.campaign_id, [])
    steps = [s for s in campaign_steps if s.position >= case.next_step.position]
    dates = upcoming_dates(case, steps, customer.tz, earliest=case.next_action_at, scheduled_id=case.next_step_id)
    suspend_on = dates.get("suspension") if customer.status != Customer.Status.SUSPENDED else None
    return dates.get("next_retry"), suspend_on


def open_invoices(customer: Customer) -> list[InvoiceRow]:
    cases = {
        c.invoice_id: c
        for c in DunningCase.objects.open().filter(customer=customer).select_related("next_step")
    }
    plan_invoice_ids = set(
        Invoice.objects.filter(payment_plans__customer=customer,
                               payment_plans__status=PaymentPlan.Status.ACTIVE).values_list("pk", flat=True)
    )
    paying = set(
        PaymentAttempt.objects.pending().filter(invoice__customer=customer).values_list("invoice_id", flat=True)
    )
    steps = CampaignStep.objects.by_campaign(c.campaign_id for c in cases.values())
    rows = []
    for invoice in customer.invoices.open().order_by("due_date", "id"):
        case = cases.get(invoice.pk)
        row = InvoiceRow(invoice, case, on_plan=invoice.pk in plan_invoice_ids, paying=invoice.pk in paying)
        if case is not None:
            row.retry_on, row.suspend_on = next_events(case, customer, steps.get(case.campaign_id, []))
        rows.append(row)
    return rows


def invoice_for(customer: Customer, invoice_id: int) -> Invoice:
    """An invoice of this customer only (Invoice.DoesNotExist otherwise, which the view turns into 404)."""
    return customer.invoices.get(pk=invoice_id)


# --- Payment methods ------------------------------------------------------------------------------

def update_payment_method(customer: Customer, *, token: str, brand: str, last4: str, exp_month: int | None,
                          exp_year: int | None, gateway: str, actor=PORTAL_ACTOR) -> PaymentMethod:
    """Make a card the customer entered (tokenized by the gateway) the default method; then every open
    invoice in dunning is retried with it once, in a worker after the commit (the result page shows
    each invoice as processing until its answer lands). Only the token, brand, last 4 and expiry are kept."""
    with transaction.atomic():
        saved = customers.save_method(customer, gateway=gateway, token=token, kind=PaymentMethod.Kind.CARD,
                                      brand=brand, last4=last4, exp_month=exp_month, exp_year=exp_year)
        method = saved.method
        if saved.created or saved.became_default or saved.details_changed:
            for case in DunningCase.objects.open().filter(customer=customer):
                log(case, EventKind.CUSTOMER_PAYMENT_METHOD_UPDATED, f"New payment method {method} (portal)",
                    actor=actor, payload=_payload(actor, {"payment_method": method.pk}))
        tasks.queue_retry_after_method_update(method, actor=actor)
    return method


def method_update_attempts(customer: Customer, method: PaymentMethod) -> list[PaymentAttempt]:
    """The charges the card-update retry made with this method, one per invoice."""
    return list(
        PaymentAttempt.objects.filter(invoice__customer=customer, payment_method=method,
                                      idempotency_key__startswith=f"method-update:{method.pk}:")
        .select_related("invoice").order_by("invoice__due_date", "id")
    )


def method_update_pending(customer: Customer, method: PaymentMethod) -> list[Invoice]:
    """The invoices in dunning when the method was saved that its retry has not charged yet (the task
    has not run): shown as processing, and the customer can reload the page for the answer."""
    charged = PaymentAttempt.objects.filter(invoice__customer=customer,
                                            idempotency_key__startswith=f"method-update:{method.pk}:")
    return list(
        Invoice.objects.filter(dunning_cases__in=DunningCase.objects.open().filter(
            customer=customer, created_at__lte=method.updated_at))
        .exclude(pk__in=charged.values("invoice_id")).distinct().order_by("due_date", "id")
    )


# --- Pay now --------------------------------------------------------------------------------------

class PayNowRefused(DunningError):
    pass


def pay_invoice(customer: Customer, invoice_id: int, idempotency_key: str, *,
                actor=PORTAL_ACTOR) -> PaymentAttempt:
    """Charge one invoice's balance to the method on file. The key comes from the form, so a double
    submit finds the first attempt instead of charging again; a second form is refused while one
    attempt is pending or once nothing remains."""
    key = f"portal-pay:{customer.pk}:{idempotency_key[:64]}"
    existing = PaymentAttempt.objects.filter(idempotency_key=key).first()
    if existing is not None:
        if existing.invoice.customer_id != customer.pk:
            raise Invoice.DoesNotExist
        return existing
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_for(customer, invoice_id).pk)
        if invoice.status != Invoice.Status.OPEN or invoice.amount_remaining <= 0:
            raise PayNowRefused("nothing_due")
        if invoice.attempts.pending().exists():
            raise PayNowRefused("in_progress")
        method = customer.default_payment_method
        if method is None:
            raise PayNowRefused("no_method")
        attempt = billing.new_attempt(invoice, payment_method=method, source=PaymentAttempt.Source.PORTAL,
                                      idempotency_key=key)
        attempt.lease_until = timezone.now() + datetime.timedelta(minutes=5)  # processed right here
        attempt.save()
        case = DunningCase.objects.open().filter(invoice=invoice).first()
        if case is not None:
            log(case, EventKind.PAYMENT_PORTAL_PAY, "The customer paid now from the portal", actor=actor,
                attempt=attempt, payload=_payload(actor))
    return attempts.process(attempt, payments.SETTLEMENT)


# --- Support, links, preferences ------------------------------------------------------------------

def contact_support(customer: Customer, message: str, *, actor=PORTAL_ACTOR) -> WorkItem:
    case = DunningCase.objects.open().filter(customer=customer).order_by("-failed_at").first()
    with transaction.atomic():
        item, _created = create_work_item(
            customer, WorkItem.Kind.SUPPORT, f"Message from {customer.name} (portal)", body=message,
            case=case, actor=actor,
        )
        row = outbox.build(
            customer, channel=Channel.EMAIL, template_code="support_ack",
            context={"customer_name": customer.name},  # links are minted when it is sent
            dedupe_key=f"support-ack:{item.pk}", reference=case_key(case.pk) if case else f"workitem:{item.pk}",
        )
        if row is not None:
            outbox.queue([row])
    return item


def send_fresh_link(customer: Customer) -> bool:
    """Email a new portal link to the address on file (at most one per customer per minute)."""
    row = outbox.build(
        customer, channel=Channel.EMAIL, template_code="portal_link",
        context={"customer_name": customer.name},  # the link is minted when it is sent, never stored
        dedupe_key=f"portal-link:{customer.pk}:{int(time.time()) // 60}", reference=f"customer:{customer.pk}",
    )
    if row is None or customer.email_undeliverable:
        return False
    outbox.queue([row])
    return True


def customers_with_email(email: str):
    return Customer.objects.filter(email__iexact=email.strip())[:5]


def set_preferences(customer: Customer, *, locale: str, opt_out_email: bool, opt_out_sms: bool,
                    opt_out_inapp: bool, actor=PORTAL_ACTOR) -> Customer:
    fields = {"locale": locale, "opt_out_email": opt_out_email, "opt_out_sms": opt_out_sms,
              "opt_out_inapp": opt_out_inapp}
    changed = {k: v for k, v in fields.items() if getattr(customer, k) != v}
    if changed:
        for key, value in changed.items():
            setattr(customer, key, value)
        customer.save(update_fields=[*changed, "updated_at"])
        for case in DunningCase.objects.open().filter(customer=customer):
            log(case, EventKind.CUSTOMER_PREFERENCES, "Communication preferences changed in the portal",
                actor=actor, payload=_payload(actor, changed))
    return customer

