"""factory_boy factories for every model the tests build."""

from __future__ import annotations

import datetime
from decimal import Decimal

import factory
from django.utils import timezone

from billing.models import Invoice
from customers.models import Customer, PaymentMethod
from dunning.models import Campaign, CampaignStep
from notifications.models import MessageTemplate, Notification


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
