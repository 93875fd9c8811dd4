"""POST /webhooks/stripe/: Stripe's events, verified by signature, applied once (integrations.gateway_events)."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.gateways import InvalidWebhook
from billing.gateways.stripe import StripeGateway
from integrations import gateway_events

logger = logging.getLogger(__name__)
_gateway = StripeGateway()


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    try:
        event = _gateway.parse_webhook(request.body, request.headers)
    except InvalidWebhook as exc:
        logger.warning("Stripe webhook rejected: %s", exc)
        return JsonResponse({"error": "invalid signature or payload"}, status=400)
    result = gateway_events.handle(event, _gateway.name)
    return JsonResponse({"received": True, "result": result})
