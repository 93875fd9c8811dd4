"""factory_boy factories for every model the tests build."""

from __future__ import annotations

import datetime
from decimal import Decimal

import factory
from django.utils import timezone
from django_q.models import Task

from billing.models import GatewayRefund, Invoice, InvoiceFee, PaymentAttempt
from customers.models import BillingContact, Customer, PaymentMethod
from dunning.models import (
    Campaign,
    CampaignPin,
    CampaignStep,
    CampaignVariant,
    CaseEvent,
    DunningCase,
    FeePolicy,
    RetryPolicy,
)
from dunning.plan_models import Instalment, PaymentPlan, PlanLimit
from integrations.models import ImportJob, InboundEvent
from notifications.models import MessageTemplate, Notification, WebhookDelivery, WebhookEndpoint


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    external_id = factory.Sequence(lambda n: f"cus_{n:05d}")
    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.LazyAttribute(lambda o: f"{o.external_id}@example.com")
    locale = "en"
    timezone = "UTC"
    currency = "USD"
    country = "US"


class PaymentMethodFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentMethod

    customer = factory.SubFactory(CustomerFactory)
    gateway = "sandbox"
    brand = "visa"
    last4 = "4242"
    exp_month = 12
    exp_year = 2030
    is_default = True

    # Tokens are unique per gateway; the sandbox reads the part before ':' (see its docstring).
    token = factory.Sequence(lambda n: f"tok_ok:{n}")


class InvoiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invoice

    customer = factory.SubFactory(CustomerFactory)
    external_id = factory.Sequence(lambda n: f"in_{n:06d}")
    number = factory.Sequence(lambda n: f"INV-{n:06d}")
    currency = factory.LazyAttribute(lambda o: o.customer.currency)
    amount_due = Decimal("49.00")
    amount_paid = Decimal("0")
    issued_at = factory.LazyFunction(lambda: timezone.now().date() - datetime.timedelta(days=1))
    due_date = factory.LazyFunction(lambda: timezone.now().date())


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    active = True
    priority = 10


class CampaignStepFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CampaignStep

    campaign = factory.SubFactory(CampaignFactory)
    position = factory.Sequence(lambda n: n + 1)
    offset_days = 0
    action = CampaignStep.Action.EMAIL
    template_code = "reminder"


# --- The rest of the admin's models (tests/reports/test_admin_roles.py opens a page of each) ---------------

class PaymentAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentAttempt

    invoice = factory.SubFactory(InvoiceFactory)
    amount = factory.LazyAttribute(lambda o: o.invoice.amount_due)
    currency = factory.LazyAttribute(lambda o: o.invoice.currency)
    outcome = PaymentAttempt.Outcome.FAILED
    decline_code = "insufficient_funds"
    idempotency_key = factory.Sequence(lambda n: f"attempt-{n}")


class GatewayRefundFactory(factory.django.DjangoModelFactory):
    """A late charge given back (billing.attempts.late_charge writes them)."""

    class Meta:
        model = GatewayRefund

    attempt = factory.SubFactory(PaymentAttemptFactory, outcome=PaymentAttempt.Outcome.SUCCEEDED, decline_code="")
    invoice = factory.LazyAttribute(lambda o: o.attempt.invoice)
    amount = factory.LazyAttribute(lambda o: o.attempt.amount)
    currency = factory.LazyAttribute(lambda o: o.attempt.currency)
    status = GatewayRefund.Status.SUCCEEDED
    idempotency_key = factory.LazyAttribute(lambda o: f"late-refund:{o.attempt.pk}")


class InvoiceFeeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InvoiceFee

    invoice = factory.SubFactory(InvoiceFactory)
    key = factory.Sequence(lambda n: f"fee-{n}")
    kind = InvoiceFee.Kind.FIXED
    amount = Decimal("5.00")
    currency = factory.LazyAttribute(lambda o: o.invoice.currency)


class WebhookEndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookEndpoint

    url = factory.Sequence(lambda n: f"https://hooks.example.com/{n}")


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookDelivery

    endpoint = factory.SubFactory(WebhookEndpointFactory)
    event_id = factory.Sequence(lambda n: f"delivery-{n}")
    event_type = "case.opened"
    payload = factory.LazyAttribute(lambda o: {"id": o.event_id, "type": o.event_type})


class CampaignVariantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CampaignVariant

    experiment = factory.SubFactory(CampaignFactory)
    name = factory.Sequence(lambda n: f"Variant {n}")
    steps_from = factory.SelfAttribute("experiment")


class CampaignPinFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CampaignPin

    customer = factory.SubFactory(CustomerFactory)
    campaign = factory.SubFactory(CampaignFactory)


class PaymentPlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentPlan
        skip_postgeneration_save = True

    customer = factory.SubFactory(CustomerFactory)
    currency = factory.LazyAttribute(lambda o: o.customer.currency)
    total = Decimal("90.00")
    months = 3

    @factory.post_generation
    def instalments(plan, create, extracted, **kwargs):
        if create:
            share = Decimal(plan.total) / plan.months
            for number in range(1, plan.months + 1):
                Instalment.objects.create(plan=plan, number=number, amount=share,
                                          due_date=timezone.now().date() + datetime.timedelta(days=30 * number))


class InboundEventFactory(factory.django.DjangoModelFactory):
    """An API payment event by default; ``source="stripe", kind="charge.failed"`` for a gateway webhook."""

    class Meta:
        model = InboundEvent

    event_id = factory.Sequence(lambda n: f"pe_{n:06d}")
    kind = InboundEvent.Kind.PAYMENT_SUCCEEDED


class ImportJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ImportJob

    file_name = "invoices.csv"
    stored_path = "imports/none/invoices.csv"
    status = ImportJob.Status.DONE


class TaskFactory(factory.django.DjangoModelFactory):
    """A finished django-q task (the admin shows successes and failures)."""

    class Meta:
        model = Task

    id = factory.Sequence(lambda n: f"{n:032x}")
    name = factory.Sequence(lambda n: f"task-{n}")
    func = "dunning.tasks.run_due_steps"
    started = factory.LazyFunction(timezone.now)
    stopped = factory.LazyFunction(timezone.now)
    success = True


class MessageTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MessageTemplate
        django_get_or_create = ("code", "channel", "locale")

    code = "nudge"
    channel = "email"
    locale = "en"
    subject = "A friendly nudge"
    body_text = "Please have a look at your account."


class NotificationFactory(factory.django.DjangoModelFactory):
    """A queued outbox row (use with MessageTemplateFactory for its template)."""

    class Meta:
        model = Notification

    customer = factory.SubFactory(CustomerFactory)
    channel = "email"
    recipient = factory.LazyAttribute(lambda o: o.customer.email)
    template_code = "nudge"
    dedupe_key = factory.Sequence(lambda n: f"test:{n}")
    reference = factory.Sequence(lambda n: f"test:{n}")


def retrying_campaign(*later_actions: str) -> Campaign:
    """A campaign whose first step retries at once (no timing policy), then ``later_actions`` at once
    too; a call step 30 days later keeps the case open meanwhile."""
    campaign = CampaignFactory()
    CampaignStepFactory(campaign=campaign, position=1, action=CampaignStep.Action.RETRY, template_code="")
    for position, action in enumerate(later_actions, start=2):
        CampaignStepFactory(campaign=campaign, position=position, action=action, template_code="")
    CampaignStepFactory(campaign=campaign, position=len(later_actions) + 2, action=CampaignStep.Action.CALL,
                        template_code="", offset_days=30)
    return campaign


class BillingContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BillingContact

    customer = factory.SubFactory(CustomerFactory)
    name = factory.Sequence(lambda n: f"Contact {n}")
    email = factory.Sequence(lambda n: f"contact{n}@example.org")
    role = BillingContact.Role.BILLING
    is_primary = False


class FeePolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FeePolicy

    campaign = factory.SubFactory(CampaignFactory)
    enabled = True


class PlanLimitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlanLimit
        django_get_or_create = ("currency",)

    currency = "USD"
    min_instalment = Decimal("20.00")
    max_months = 4


class RetryPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RetryPolicy

    campaign = factory.SubFactory(CampaignFactory)


class DunningCaseFactory(factory.django.DjangoModelFactory):
    """An active case on an open invoice of the same customer, failed an hour ago."""

    class Meta:
        model = DunningCase

    invoice = factory.SubFactory(InvoiceFactory)
    customer = factory.SelfAttribute("invoice.customer")
    campaign = factory.SubFactory(CampaignFactory)
    currency = factory.SelfAttribute("invoice.currency")
    failed_at = factory.LazyFunction(lambda: timezone.now() - datetime.timedelta(hours=1))


class CaseEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CaseEvent

    case = factory.SubFactory(DunningCaseFactory)
    kind = "message.queued"
    at = factory.SelfAttribute("case.failed_at")
