"""factory_boy factories for every model the tests build."""

from __future__ import annotations

import datetime
from decimal import Decimal

import factory
from django.utils import timezone

from billing.models import Invoice
from customers.models import Customer, PaymentMethod
from dunning.models import Campaign, CampaignStep


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
