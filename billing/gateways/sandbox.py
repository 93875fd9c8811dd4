"""The sandbox gateway: a processor simulated in the local database, for demos and tests.

Test tokens (put them on a PaymentMethod's ``token``):

================================ ==================================================================
``tok_ok``                        always succeeds
``tok_insufficient_funds``        declined: ``insufficient_funds`` (soft)
``tok_expired_card``              declined: ``expired_card`` (needs a new card)
``tok_do_not_honor``              declined: ``do_not_honor`` (soft)
``tok_stolen_card``               declined: ``stolen_card`` (never retry)
``tok_lost_card``                 declined: ``lost_card`` (never retry)
``tok_fraudulent``                declined: ``fraudulent`` (never retry)
``tok_processing_error``          declined: ``processing_error`` (retry soon)
``tok_authentication_required``   declined: ``authentication_required`` (customer must act)
``tok_succeed_after_N``           declined ``insufficient_funds`` N-1 times, then succeeds
``tok_advice_NN``                 declined ``do_not_honor`` with Mastercard advice code NN
                                  (``tok_advice_03`` never retry, ``tok_advice_24`` .. ``_30`` wait)
``tok_network_NN``                declined ``generic_decline`` with raw network response code NN
``tok_timeout_after_charge``      the charge is taken, then the connection times out (OutcomeUnknown);
                                  asking again with the same idempotency key returns the success
``tok_timeout``                   times out before anything is charged, every time
================================ ==================================================================

A token may carry a suffix after a colon (``tok_ok:alice``) so that several saved methods can
share a behaviour; "after N" counts charges per full token. Each idempotency key is charged once:
repeating a key returns the first outcome.

``tokenize_card`` turns well-known test card numbers into these tokens for the portal's sandbox
card form (docs/payments.md and docs/portal.md list the numbers); the declining ones are refused
at setup (CardDeclined) as a real gateway does, so the portal never saves them.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from billing.gateways.base import (
    CardDeclined,
    ChargeRequest,
    ChargeResult,
    GatewayError,
    MethodDetails,
    MethodUpdateSession,
    OutcomeUnknown,
    PaymentGateway,
    RefundRequest,
    RefundResult,
)
from billing.models import SandboxCharge, SandboxRefund

DECLINING_TOKENS = {
    "tok_insufficient_funds": "insufficient_funds",
    "tok_expired_card": "expired_card",
    "tok_do_not_honor": "do_not_honor",
    "tok_stolen_card": "stolen_card",
    "tok_lost_card": "lost_card",
    "tok_fraudulent": "fraudulent",
    "tok_processing_error": "processing_error",
    "tok_authentication_required": "authentication_required",
}
SUCCEED_AFTER = re.compile(r"^tok_succeed_after_(\d+)$")
ADVICE = re.compile(r"^tok_advice_(\d{2})$")
NETWORK = re.compile(r"^tok_network_([0-9A-Z]{2})$")


class SandboxGateway(PaymentGateway):
    name = "sandbox"

    def decide(self, request: ChargeRequest, previous_charges: int) -> ChargeResult:
        token = request.payment_method_token.split(":", 1)[0]
        reference = f"sbx_{uuid.uuid4().hex[:24]}"
        if token in ("tok_ok", "tok_timeout_after_charge"):
            return ChargeResult(True, reference=reference)
        if token in DECLINING_TOKENS:
            return ChargeResult(False, reference=reference, decline_code=DECLINING_TOKENS[token])
        match = SUCCEED_AFTER.match(token)
        if match:
            if previous_charges + 1 >= int(match.group(1)):
                return ChargeResult(True, reference=reference)
            return ChargeResult(False, reference=reference, decline_code="insufficient_funds")
        if match := ADVICE.match(token):
            return ChargeResult(False, reference=reference, decline_code="do_not_honor", advice_code=match.group(1))
        if match := NETWORK.match(token):
            return ChargeResult(False, reference=reference, decline_code="generic_decline",
                                network_code=match.group(1))
        raise GatewayError(f"Unknown sandbox token {token!r}")

    def charge(self, request: ChargeRequest) -> ChargeResult:
        if settings.SANDBOX_GATEWAY_LATENCY_MS:
            # A real processor answers in hundreds of milliseconds; the race tests set this to keep
            # charges in flight while payments arrive (tests/test_payments_closed_race.py).
            time.sleep(settings.SANDBOX_GATEWAY_LATENCY_MS / 1000)
        base_token = request.payment_method_token.split(":", 1)[0]
        if base_token == "tok_timeout":
            raise OutcomeUnknown("sandbox: timed out before the charge")
        existing = SandboxCharge.objects.filter(idempotency_key=request.idempotency_key).first()
        if existing is None:
            previous = SandboxCharge.objects.filter(token=request.payment_method_token).count()
            result = self.decide(request, previous)
            try:
                with transaction.atomic():
                    existing = SandboxCharge.objects.create(
                        idempotency_key=request.idempotency_key,
                        token=request.payment_method_token,
                        amount=request.amount,
                        currency=request.currency,
                        succeeded=result.succeeded,
                        decline_code=result.decline_code,
                        advice_code=result.advice_code,
                        reference=result.reference,
                    )
            except IntegrityError:
                # Another process charged this key at the same moment: its outcome wins.
                existing = SandboxCharge.objects.get(idempotency_key=request.idempotency_key)
            else:
                if base_token == "tok_timeout_after_charge":
                    raise OutcomeUnknown("sandbox: the charge was taken, then the connection timed out")
        network_code = ""
        if match := NETWORK.match(base_token):
            network_code = match.group(1)
        return ChargeResult(
            succeeded=existing.succeeded,
            reference=existing.reference,
            decline_code=existing.decline_code,
            advice_code=existing.advice_code,
            network_code=network_code if not existing.succeeded else "",
        )

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund a successful sandbox charge, once per idempotency key (a repeat returns the first)."""
        existing = SandboxRefund.objects.filter(idempotency_key=request.idempotency_key).first()
        if existing is not None:
            return RefundResult(True, reference=existing.reference)
        charge = SandboxCharge.objects.filter(reference=request.charge_reference, succeeded=True).first()
        if charge is None:
            return RefundResult(False, message=f"No successful sandbox charge {request.charge_reference!r}")
        refunded = sum((r.amount for r in SandboxRefund.objects.filter(charge_reference=charge.reference)), 0)
        if refunded + request.amount > charge.amount:
            return RefundResult(False, message=f"Only {charge.amount - refunded} {charge.currency} is left to refund")
        try:
            with transaction.atomic():
                existing = SandboxRefund.objects.create(
                    idempotency_key=request.idempotency_key, charge_reference=charge.reference,
                    amount=request.amount, currency=request.currency, reference=f"sbx_re_{uuid.uuid4().hex[:20]}",
                )
        except IntegrityError:
            existing = SandboxRefund.objects.get(idempotency_key=request.idempotency_key)
        return RefundResult(True, reference=existing.reference)

    # --- Payment-method updates (the portal's sandbox card form) ---

    def start_method_update(self, customer_reference: str, *, return_url: str = "") -> MethodUpdateSession:
        return MethodUpdateSession(reference=f"sbx_seti_{uuid.uuid4().hex[:24]}")

    def detach(self, token: str) -> None:
        return None  # nothing is stored at the "processor"

    def retrieve_method(self, token: str) -> MethodDetails:
        raise GatewayError("The sandbox keeps no card details; use tokenize_card's answer")


# --- Card form (customer portal) ---------------------------------------------------------------
# Test card numbers, as in Stripe's test mode, mapped to the sandbox's behaviour tokens.
TEST_CARDS = {
    "4242424242424242": "tok_ok",
    "5555555555554444": "tok_ok",
    "4000000000009995": "tok_insufficient_funds",
    "4000000000000069": "tok_expired_card",
    "4000000000000002": "tok_do_not_honor",
    "4000000000009979": "tok_stolen_card",
    "4000000000000119": "tok_processing_error",
    "378282246310005": "tok_ok",
    "4000000000009987": "tok_lost_card",
    "4100000000000019": "tok_fraudulent",
    "4000002760003184": "tok_authentication_required",
    "5105105105105100": "tok_advice_03",
    # Saved, then every charge is declined (Stripe's "attach succeeds, charges fail" card).
    "4000000000000341": "tok_do_not_honor",
}
# Cards whose setup the sandbox declines, as Stripe's SetupIntent does for these test numbers: the
# portal never stores them (a card that declines only when charged is 4000000000000341 above).
DECLINED_AT_SETUP = {
    "4000000000009995": "insufficient_funds",
    "4000000000000069": "expired_card",
    "4000000000000002": "do_not_honor",
    "4000000000009979": "stolen_card",
    "4000000000009987": "lost_card",
    "4100000000000019": "fraudulent",
    "4000000000000119": "processing_error",
    "5105105105105100": "do_not_honor",
}


@dataclass(frozen=True)
class TokenizedCard:
    """What may be kept of a card: the gateway's token, brand, last 4 digits and expiry. No PAN, no CVC."""

    token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class CardRejected(GatewayError):
    """The card form's data is not a usable card (unknown test number, bad expiry)."""


def card_brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or "2221" <= number[:4] <= "2720":
        return "mastercard"
    if number[:2] in {"34", "37"}:
        return "amex"
    return "card"


def tokenize_card(number: str, exp_month: int, exp_year: int, cvc: str) -> TokenizedCard:
    """Stand-in for a processor's card vault: turn a test card into a token, keeping only what PCI DSS
    allows. The number and CVC go no further than this function (never logged, never stored)."""
    digits = "".join(ch for ch in number if ch.isdigit())
    behaviour = TEST_CARDS.get(digits)
    if behaviour is None or not (cvc.isdigit() and len(cvc) in (3, 4)):
        raise CardRejected("This card was declined by the sandbox: use one of its test cards.")
    if digits in DECLINED_AT_SETUP:
        raise CardDeclined(DECLINED_AT_SETUP[digits])
    return TokenizedCard(
        token=f"{behaviour}:{uuid.uuid4().hex[:16]}",
        brand=card_brand(digits),
        last4=digits[-4:],
        exp_month=exp_month,
        exp_year=exp_year,
    )


SandboxGateway.tokenize_card = staticmethod(tokenize_card)
