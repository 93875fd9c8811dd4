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


@dataclass(frozen=True)
class RefundRequest:
    """Give back (part of) a successful charge, named by its gateway reference. Idempotent on the key."""

    charge_reference: str
    amount: Decimal
    currency: str
    idempotency_key: str
    reason: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RefundResult:
    succeeded: bool
    reference: str = ""
    message: str = ""


class GatewayError(Exception):
    """The gateway refused the request itself (bad configuration, invalid token format)."""


class CardDeclined(GatewayError):
    """The gateway refused to save a new card (its verification at setup was declined): the card
    must not be stored. ``decline_code`` says why, in the gateway's decline vocabulary."""

    def __init__(self, decline_code: str = "generic_decline", message: str = "") -> None:
        super().__init__(message or f"card declined: {decline_code}")
        self.decline_code = decline_code or "generic_decline"


class OutcomeUnknown(GatewayError):
    """The request may or may not have been processed (timeout, dropped connection).

    The attempt stays pending and is sent again later with the same idempotency key, which the
    gateway answers with the first outcome: never a second charge.
    """


class PaymentGateway(ABC):
    """Charge a saved method off session (idempotent), refund a charge (idempotent), start a method
    update for the portal, detach a method, look one up, and turn the gateway's webhooks into
    GatewayEvents."""

    name: str = ""

    @abstractmethod
    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge a saved payment method off session. Must be idempotent on request.idempotency_key."""

    @abstractmethod
    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund request.amount of the charge request.charge_reference. Must be idempotent on
        request.idempotency_key; raises OutcomeUnknown when it may or may not have been done."""

    # Optional operations: a gateway that lacks one raises GatewayError when it is used.

    def start_method_update(self, customer_reference: str, *, return_url: str = "") -> MethodUpdateSession:
        raise GatewayError(f"{self.name} cannot update payment methods")

    def detach(self, token: str) -> None:
        raise GatewayError(f"{self.name} cannot detach payment methods")

    def retrieve_method(self, token: str) -> MethodDetails:
        raise GatewayError(f"{self.name} cannot look up payment methods")

    def parse_webhook(self, payload: bytes, headers) -> GatewayEvent:
        raise InvalidWebhook(f"{self.name} sends no webhooks")


@dataclass(frozen=True)
class MethodDetails:
    """What may be stored about a payment method (PCI DSS: never the number or CVC)."""

    token: str
    brand: str = ""
    last4: str = ""
    exp_month: int | None = None
    exp_year: int | None = None
    kind: str = "card"
    customer_reference: str = ""


@dataclass(frozen=True)
class MethodUpdateSession:
    """A started payment-method update: the portal hands ``client_secret`` to the gateway's card form
    (Stripe Elements confirms the SetupIntent) or sends the customer to ``url``."""

    reference: str
    client_secret: str = ""
    url: str = ""


@dataclass(frozen=True)
class GatewayEvent:
    """A webhook turned into a domain event (see integrations.gateway_events for what each kind does)."""

    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    INVOICE_PAID = "invoice_paid"
    INVOICE_PAYMENT_FAILED = "invoice_payment_failed"
    METHOD_UPDATED = "method_updated"
    METHOD_ADDED = "method_added"
    CUSTOMER_UPDATED = "customer_updated"
    IGNORED = "ignored"

    kind: str
    event_id: str
    event_type: str
    created: int  # Unix time of the event at the gateway
    object_id: str = ""
    data: dict = field(default_factory=dict)


class InvalidWebhook(GatewayError):
    """The webhook's signature or payload is not valid: answer 400 and record nothing."""
