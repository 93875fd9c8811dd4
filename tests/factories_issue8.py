"""Factories for billing contacts, fee policies and campaigns with fees (issue 8)."""

from __future__ import annotations

import factory

from customers.models import BillingContact
from dunning.models import FeePolicy
from tests.factories import CampaignFactory, CustomerFactory


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
