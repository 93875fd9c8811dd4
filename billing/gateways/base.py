from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class ChargeRequest:
    amount: Decimal
    currency: str
    payment_method_token: str
    idempotency_key: str
    customer_reference: str = ""
    description: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    reference: str = ""
    decline_code: str = ""
    advice_code: str = ""
    network_code: str = ""
    message: str = ""


class GatewayError(Exception):
    """The gateway refused the request itself (bad configuration, invalid token format)."""


class OutcomeUnknown(GatewayError):
    """The request may or may not have been processed (timeout, dropped connection).

    The attempt stays pending and is sent again later with the same idempotency key, which the
    gateway answers with the first outcome: never a second charge.
    """


class PaymentGateway(ABC):
    name: str = ""

    @abstractmethod
    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge a saved payment method off session. Must be idempotent on request.idempotency_key."""
