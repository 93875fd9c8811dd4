"""The sandbox gateway: a processor simulated in the local database, for demos and tests.

Test tokens (put them on a PaymentMethod's ``token``):

=========================== =======================================================
``tok_ok``                   always succeeds
``tok_insufficient_funds``   declined: ``insufficient_funds`` (soft)
``tok_expired_card``         declined: ``expired_card`` (needs a new card)
``tok_do_not_honor``         declined: ``do_not_honor`` (soft)
``tok_stolen_card``          declined: ``stolen_card`` (never retry)
``tok_processing_error``     declined: ``processing_error`` (retry soon)
``tok_succeed_after_N``      declined ``insufficient_funds`` N-1 times, then succeeds
=========================== =======================================================

A token may carry a suffix after a colon (``tok_ok:alice``) so that several saved methods can
share a behaviour; "after N" counts charges per full token. Each idempotency key is charged once:
repeating a key returns the first outcome.
"""

from __future__ import annotations

import re
import uuid

from django.db import IntegrityError, transaction

from billing.gateways.base import ChargeRequest, ChargeResult, GatewayError, PaymentGateway

DECLINING_TOKENS = {
    "tok_insufficient_funds": "insufficient_funds",
    "tok_expired_card": "expired_card",
    "tok_do_not_honor": "do_not_honor",
    "tok_stolen_card": "stolen_card",
    "tok_processing_error": "processing_error",
}
SUCCEED_AFTER = re.compile(r"^tok_succeed_after_(\d+)$")


class SandboxGateway(PaymentGateway):
    name = "sandbox"

    def decide(self, request: ChargeRequest, previous_charges: int) -> ChargeResult:
        token = request.payment_method_token.split(":", 1)[0]
        reference = f"sbx_{uuid.uuid4().hex[:24]}"
        if token == "tok_ok":
            return ChargeResult(True, reference=reference)
        if token in DECLINING_TOKENS:
            return ChargeResult(False, reference=reference, decline_code=DECLINING_TOKENS[token])
        match = SUCCEED_AFTER.match(token)
        if match:
            if previous_charges + 1 >= int(match.group(1)):
                return ChargeResult(True, reference=reference)
            return ChargeResult(False, reference=reference, decline_code="insufficient_funds")
        raise GatewayError(f"Unknown sandbox token {token!r}")

    def charge(self, request: ChargeRequest) -> ChargeResult:
        from billing.models import SandboxCharge

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
        return ChargeResult(
            succeeded=existing.succeeded,
            reference=existing.reference,
            decline_code=existing.decline_code,
            advice_code=existing.advice_code,
        )
