"""The Stripe gateway, on the official ``stripe`` SDK.

- Charges: a PaymentIntent confirmed off session against the customer's saved method, with our
  idempotency key, so asking again after a timeout returns the first outcome instead of charging.
- Refunds: a Refund of the PaymentIntent with our idempotency key (a late charge, docs/payments.md).
- Method updates: a SetupIntent (usage off_session) whose client secret the portal gives to Stripe
  Elements; the resulting method arrives by webhook (setup_intent.succeeded).
- Webhooks: ``Stripe-Signature`` verified with ``stripe.Webhook.construct_event``; events become
  GatewayEvents handled by integrations.gateway_events.

Customers and invoices are matched by ``external_id`` = the Stripe id (cus_..., in_...), saved
methods by ``PaymentMethod.token`` = pm_... . ``STRIPE_API_BASE`` points the SDK elsewhere (tests
run it against a local server that speaks Stripe's wire format).
"""

from __future__ import annotations

import json

import stripe
from django.conf import settings

from billing.gateways.base import (
    CardDeclined,
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
from billing.money import to_minor_units

E = GatewayEvent
EVENT_KINDS = {
    "invoice.payment_failed": E.INVOICE_PAYMENT_FAILED,
    "invoice.paid": E.INVOICE_PAID,
    "invoice.payment_succeeded": E.INVOICE_PAID,
    "payment_intent.succeeded": E.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": E.PAYMENT_FAILED,
    "payment_method.updated": E.METHOD_UPDATED,
    "payment_method.automatically_updated": E.METHOD_UPDATED,
    "payment_method.attached": E.METHOD_ADDED,
    "setup_intent.succeeded": E.METHOD_ADDED,
    "customer.updated": E.CUSTOMER_UPDATED,
}


def _id(value) -> str:
    """A Stripe reference that may be an id or an expanded object."""
    if isinstance(value, dict):
        return value.get("id") or ""
    return value or ""


def error_codes(error: dict | None) -> dict:
    """decline/network/advice codes from a Stripe error object (last_payment_error or a CardError)."""
    error = error or {}
    return {
        "decline_code": error.get("decline_code") or error.get("code") or "",
        "network_code": error.get("network_decline_code") or "",
        "advice_code": error.get("network_advice_code") or "",
        "message": error.get("message") or "",
    }


def method_details(pm: dict) -> MethodDetails:
    card = pm.get("card") or {}
    return MethodDetails(
        token=pm.get("id", ""), brand=card.get("brand") or "", last4=card.get("last4") or "",
        exp_month=card.get("exp_month"), exp_year=card.get("exp_year"),
        kind="card" if pm.get("type", "card") == "card" else pm.get("type", "other"),
        customer_reference=_id(pm.get("customer")),
    )


class StripeGateway(PaymentGateway):
    name = "stripe"

    def __init__(self) -> None:
        self._client: tuple[tuple, stripe.StripeClient] | None = None

    @property
    def client(self) -> stripe.StripeClient:
        # Settings are read on use (not at import), so tests and a changed environment take effect.
        key = (settings.STRIPE_API_KEY, settings.STRIPE_API_BASE, settings.STRIPE_TIMEOUT_SECONDS)
        if self._client is None or self._client[0] != key:
            if not settings.STRIPE_API_KEY:
                raise GatewayError("STRIPE_API_KEY is not set (docs/configuration.md)")
            client = stripe.StripeClient(
                settings.STRIPE_API_KEY,
                base_addresses={"api": settings.STRIPE_API_BASE},
                # No silent SDK retries: an unknown outcome goes back to our queue, same idempotency key.
                max_network_retries=0,
                http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
            )
            self._client = (key, client)
        return self._client[1]

    def charge(self, request: ChargeRequest) -> ChargeResult:
        params = {
            "amount": to_minor_units(request.amount, request.currency),
            "currency": request.currency.lower(),
            "customer": request.customer_reference,
            "payment_method": request.payment_method_token,
            "off_session": True,
            "confirm": True,
            "description": request.description,
            "metadata": {k: str(v) for k, v in request.metadata.items()},
        }
        try:
            intent = self.client.v1.payment_intents.create(
                params, {"idempotency_key": request.idempotency_key}
            ).to_dict()
        except stripe.CardError as exc:
            error = exc.error.to_dict() if exc.error else {}
            codes = error_codes(error)
            return ChargeResult(False, reference=_id(error.get("payment_intent")), decline_code=codes["decline_code"],
                                network_code=codes["network_code"], advice_code=codes["advice_code"],
                                message=codes["message"][:255])
        except stripe.APIConnectionError as exc:
            raise OutcomeUnknown(f"Stripe: {exc.user_message or exc}") from exc
        except (stripe.RateLimitError, stripe.APIError) as exc:
            # 429 or 5xx: Stripe may or may not have acted; the same key tells us later.
            raise OutcomeUnknown(f"Stripe {exc.http_status}: {exc.user_message or exc}") from exc
        except stripe.StripeError as exc:
            raise GatewayError(f"Stripe {exc.http_status}: {exc.user_message or exc}") from exc
        status = intent.get("status")
        if status == "succeeded":
            return ChargeResult(True, reference=intent["id"])
        if status == "processing":
            raise OutcomeUnknown(f"Stripe: payment {intent['id']} is still processing")
        if status == "requires_action":
            return ChargeResult(False, reference=intent["id"], decline_code="authentication_required",
                                message="The customer must authenticate this payment")
        codes = error_codes(intent.get("last_payment_error"))
        return ChargeResult(False, reference=intent["id"], decline_code=codes["decline_code"] or "generic_decline",
                            network_code=codes["network_code"], advice_code=codes["advice_code"],
                            message=codes["message"][:255])

    def refund(self, request: RefundRequest) -> RefundResult:
        params = {
            "payment_intent": request.charge_reference,
            "amount": to_minor_units(request.amount, request.currency),
            "metadata": {k: str(v) for k, v in request.metadata.items()},
        }
        if request.reason:
            params["metadata"]["reason"] = request.reason[:500]
        try:
            refund = self.client.v1.refunds.create(params, {"idempotency_key": request.idempotency_key}).to_dict()
        except stripe.APIConnectionError as exc:
            raise OutcomeUnknown(f"Stripe: {exc.user_message or exc}") from exc
        except (stripe.RateLimitError, stripe.APIError) as exc:
            raise OutcomeUnknown(f"Stripe {exc.http_status}: {exc.user_message or exc}") from exc
        except stripe.StripeError as exc:
            return RefundResult(False, message=f"Stripe {exc.http_status}: {exc.user_message or exc}"[:255])
        status = refund.get("status")
        if status in ("succeeded", "pending"):
            # "pending": accepted, the money is on its way back (Stripe finishes it on its own).
            return RefundResult(True, reference=refund["id"])
        return RefundResult(False, reference=refund.get("id", ""),
                            message=f"Stripe refund {status}: {refund.get('failure_reason') or ''}"[:255])

    def start_method_update(self, customer_reference: str, *, return_url: str = "") -> MethodUpdateSession:
        try:
            intent = self.client.v1.setup_intents.create(
                {"customer": customer_reference, "usage": "off_session", "payment_method_types": ["card"]}
            ).to_dict()
        except stripe.StripeError as exc:
            raise GatewayError(f"Stripe: {exc.user_message or exc}") from exc
        return MethodUpdateSession(reference=intent["id"], client_secret=intent.get("client_secret") or "")

    # --- The portal's Stripe Elements page (dunning.portal.views) ---

    def create_setup_intent(self, customer) -> dict:
        session = self.start_method_update(customer.external_id)
        return {"id": session.reference, "client_secret": session.client_secret,
                "publishable_key": settings.STRIPE_PUBLISHABLE_KEY}

    def card_from_setup_intent(self, customer, setup_intent_id: str) -> MethodDetails:
        """The card a confirmed SetupIntent saved, after checking it succeeded for this customer."""
        if not setup_intent_id.startswith("seti_"):
            raise GatewayError("Not a SetupIntent id")
        try:
            intent = self.client.v1.setup_intents.retrieve(
                setup_intent_id, {"expand": ["payment_method"]}
            ).to_dict()
        except stripe.StripeError as exc:
            raise GatewayError(f"Stripe: {exc.user_message or exc}") from exc
        if _id(intent.get("customer")) != customer.external_id:
            raise GatewayError("The SetupIntent belongs to another customer")
        if intent.get("status") != "succeeded":
            # Declined at setup (requires_payment_method with last_setup_error): never save it.
            error = intent.get("last_setup_error")
            raise CardDeclined(error_codes(error)["decline_code"] if error else "generic_decline")
        pm = intent.get("payment_method")
        return method_details(pm) if isinstance(pm, dict) else self.retrieve_method(_id(pm))

    def detach(self, token: str) -> None:
        try:
            self.client.v1.payment_methods.detach(token)
        except stripe.InvalidRequestError as exc:
            if exc.code != "resource_missing" and "not attached" not in str(exc):
                raise GatewayError(f"Stripe: {exc.user_message or exc}") from exc
        except stripe.StripeError as exc:
            raise GatewayError(f"Stripe: {exc.user_message or exc}") from exc

    def retrieve_method(self, token: str) -> MethodDetails:
        try:
            pm = self.client.v1.payment_methods.retrieve(token)
        except stripe.StripeError as exc:
            raise GatewayError(f"Stripe: {exc.user_message or exc}") from exc
        return method_details(pm.to_dict())

    def parse_webhook(self, payload: bytes, headers) -> GatewayEvent:
        secret = settings.STRIPE_WEBHOOK_SECRET
        if not secret:
            raise InvalidWebhook("STRIPE_WEBHOOK_SECRET is not set")
        signature = headers.get("Stripe-Signature") or headers.get("HTTP_STRIPE_SIGNATURE") or ""
        try:
            stripe.Webhook.construct_event(payload, signature, secret,
                                           tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS)
            event = json.loads(payload)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise InvalidWebhook(str(exc)) from exc
        return self.to_domain_event(event)

    def to_domain_event(self, event: dict) -> GatewayEvent:
        kind = EVENT_KINDS.get(event.get("type", ""), E.IGNORED)
        obj = (event.get("data") or {}).get("object") or {}
        data: dict = {}
        if kind in (E.INVOICE_PAID, E.INVOICE_PAYMENT_FAILED):
            intent = obj.get("payment_intent")
            intent = intent if isinstance(intent, dict) else {}
            data = {
                "invoice": obj.get("id", ""), "customer": _id(obj.get("customer")),
                "currency": (obj.get("currency") or "").upper(), "amount_paid": obj.get("amount_paid") or 0,
                "attempt_count": obj.get("attempt_count") or 0, "payment_intent": _id(obj.get("payment_intent")),
                "payment_method": _id(intent.get("payment_method")),
                **error_codes(intent.get("last_payment_error")),
            }
        elif kind in (E.PAYMENT_SUCCEEDED, E.PAYMENT_FAILED):
            data = {
                "payment_intent": obj.get("id", ""), "customer": _id(obj.get("customer")),
                "currency": (obj.get("currency") or "").upper(), "amount_received": obj.get("amount_received") or 0,
                "metadata": obj.get("metadata") or {}, "invoice": _id(obj.get("invoice")),
                "payment_method": _id(obj.get("payment_method")), **error_codes(obj.get("last_payment_error")),
            }
        elif kind == E.METHOD_UPDATED or (kind == E.METHOD_ADDED and obj.get("object") == "payment_method"):
            details = method_details(obj)
            data = {"payment_method": details.token, "customer": details.customer_reference,
                    "details": details.__dict__}
        elif kind == E.METHOD_ADDED:  # setup_intent.succeeded
            pm = obj.get("payment_method")
            data = {"payment_method": _id(pm), "customer": _id(obj.get("customer")),
                    "details": method_details(pm).__dict__ if isinstance(pm, dict) else None}
        elif kind == E.CUSTOMER_UPDATED:
            settings_ = obj.get("invoice_settings") or {}
            data = {"customer": obj.get("id", ""), "email": obj.get("email"), "name": obj.get("name"),
                    "default_payment_method": _id(settings_.get("default_payment_method"))}
        return GatewayEvent(kind=kind, event_id=event.get("id", ""), event_type=event.get("type", ""),
                            created=int(event.get("created") or 0), object_id=obj.get("id", ""), data=data)
