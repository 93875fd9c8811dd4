"""Payment gateways behind one small interface, chosen by ``settings.PAYMENT_GATEWAY``."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from billing.gateways.base import (
    ChargeRequest,
    ChargeResult,
    GatewayError,
    OutcomeUnknown,
    PaymentGateway,
)

__all__ = ["ChargeRequest", "ChargeResult", "GatewayError", "OutcomeUnknown", "PaymentGateway", "get_gateway"]


@lru_cache(maxsize=8)
def _load(path: str) -> PaymentGateway:
    return import_string(path)()


def get_gateway() -> PaymentGateway:
    return _load(settings.PAYMENT_GATEWAY)
