"""Factories for the portal's payment plans."""

from __future__ import annotations

from decimal import Decimal

import factory

from dunning.plan_models import PlanLimit


class PlanLimitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlanLimit
        django_get_or_create = ("currency",)

    currency = "USD"
    min_instalment = Decimal("20.00")
    max_months = 4
