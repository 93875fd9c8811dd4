"""Payment gateways behind one small interface, chosen by ``settings.PAYMENT_GATEWAY``."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from billing.gateways.base import (
    ChargeRequest,
    ChargeResult,
    GatewayError,
    GatewayEvent,
    InvalidWebhook,
    MethodDetails,
    MethodUpdateSession,
    OutcomeUnknown,
    PaymentGateway,
    RefundRequest,
    RefundResult,
)

__all__ = ["ChargeRequest", "ChargeResult", "GatewayError", "GatewayEvent", "InvalidWebhook", "MethodDetails",
           "MethodUpdateSession", "OutcomeUnknown", "PaymentGateway", "RefundRequest", "RefundResult", "get_gateway",
           "get_gateway_by_name"]


@lru_cache(maxsize=8)
def _load(path: str) -> PaymentGateway:
    return import_string(path)()


def get_gateway() -> PaymentGateway:
    return _load(settings.PAYMENT_GATEWAY)


GATEWAYS_BY_NAME = {
    "sandbox": "billing.gateways.sandbox.SandboxGateway",
    "stripe": "billing.gateways.stripe.StripeGateway",
}


def get_gateway_by_name(name: str) -> PaymentGateway:
    """The gateway that holds a saved method (PaymentMethod.gateway), whatever the default is."""
    if name == get_gateway().name:
        return get_gateway()
    return _load(GATEWAYS_BY_NAME[name])
