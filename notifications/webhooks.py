"""Outbound webhooks to the merchant's own app (docs/webhooks.md).

``emit``/``emit_many`` write one WebhookDelivery row per interested endpoint, in the caller's
transaction (an outbox: the event exists exactly when the change that caused it committed).
``deliver_due`` posts them later, outside any lock, signed with HMAC-SHA256 over
"<timestamp>.<body>", and retries failures with exponential backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from notifications.models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Dunning-Signature"
MAX_BACKOFF = timedelta(hours=6)
STUCK_AFTER = timedelta(minutes=15)


# --- Writing events (inside the caller's transaction) -------------------------------------------

def emit(event_type: str, payload: dict, dedupe_key: str) -> int:
    """Queue one event for every active endpoint that wants it; returns the rows written."""
    return emit_many([(event_type, payload, dedupe_key)])


def has_endpoints() -> bool:
    """Whether any endpoint listens: callers skip building payloads when none does."""
    return WebhookEndpoint.objects.filter(active=True).exists()


def emit_many(events: list[tuple[str, dict, str]]) -> int:
    """Queue many events with two queries (endpoints, then one bulk insert). A dedupe key seen
    before for an endpoint is ignored, so re-running the cause never sends an event twice."""
    if not events:
        return 0
    endpoints = list(WebhookEndpoint.objects.filter(active=True))
    if not endpoints:
        return 0
    now = timezone.now()
    rows = [
        WebhookDelivery(endpoint=endpoint, event_id=dedupe_key[:200], event_type=event_type,
                        payload=json.loads(json.dumps(payload, cls=DjangoJSONEncoder)), next_attempt_at=now)
        for event_type, payload, dedupe_key in events
        for endpoint in endpoints
        if endpoint.wants(event_type)
    ]
    WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    return len(rows)


# --- Signing ------------------------------------------------------------------------------------

def body_for(delivery: WebhookDelivery) -> bytes:
    envelope = {
        "id": delivery.event_id,
        "type": delivery.event_type,
        "created": delivery.created_at.isoformat(),
        "data": delivery.payload,
    }
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


# --- Delivering ---------------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would turn the POST into a GET somewhere else: treat it as a failure instead.
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: dict, timeout: float) -> tuple[int | None, str, str]:
    """POST and return (status, response text, error)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - admin-set URL
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, response.read(2000).decode("utf-8", "replace"), ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2000).decode("utf-8", "replace"), f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, "", f"{exc.__class__.__name__}: {exc}"


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8... minutes after the n-th failed attempt, at most MAX_BACKOFF."""
    return min(timedelta(minutes=2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def claim_due(now: datetime, limit: int) -> list[int]:
    with transaction.atomic():
        ids = list(
            WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "id")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            WebhookDelivery.objects.filter(pk__in=ids).update(
                status=WebhookDelivery.Status.SENDING, attempts=F("attempts") + 1, last_attempt_at=now,
                updated_at=now,
            )
    return ids


def deliver_one(delivery: WebhookDelivery, now: datetime) -> bool:
    body = body_for(delivery)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "dunning-webhooks/1",
        "Dunning-Event": delivery.event_type,
        "Dunning-Event-Id": delivery.event_id,
        SIGNATURE_HEADER: signature_header(delivery.endpoint.secret, body),
    }
    status, text, error = post(delivery.endpoint.url, body, headers, settings.WEBHOOK_TIMEOUT_SECONDS)
    delivery.response_status = status
    delivery.response_body = text[:2000]
    ok = status is not None and 200 <= status < 300
    if ok:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = now
        delivery.last_error = ""
    else:
        delivery.last_error = (error or f"HTTP {status}")[:2000]
        if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            delivery.status = WebhookDelivery.Status.FAILED
            logger.warning("webhook %s to %s failed for good: %s", delivery.pk, delivery.endpoint.url,
                           delivery.last_error)
        else:
            delivery.status = WebhookDelivery.Status.PENDING
            delivery.next_attempt_at = now + backoff(delivery.attempts)
    delivery.save(update_fields=["status", "response_status", "response_body", "last_error", "delivered_at",
                                 "next_attempt_at", "updated_at"])
    return ok


def release_stuck(now: datetime) -> int:
    """Deliveries left 'sending' by a worker that died: send again (receivers dedupe by event id)."""
    return WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.SENDING, last_attempt_at__lt=now - STUCK_AFTER
    ).update(status=WebhookDelivery.Status.PENDING, next_attempt_at=now, updated_at=now)


def deliver_due(now: datetime | None = None, limit: int = 100) -> int:
    """Post every due delivery; returns how many succeeded. Safe to run in several workers."""
    now = now or timezone.now()
    release_stuck(now)
    delivered = 0
    while ids := claim_due(now, limit):
        for delivery in WebhookDelivery.objects.filter(pk__in=ids).select_related("endpoint").order_by("pk"):
            delivered += deliver_one(delivery, now)
    return delivered


def retry_now(deliveries) -> int:
    """Staff: send failed or waiting deliveries again at the next run."""
    return deliveries.exclude(status=WebhookDelivery.Status.DELIVERED).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now(), attempts=0, updated_at=timezone.now()
    )


def send_test(endpoint: WebhookEndpoint) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event_id=f"test:{endpoint.pk}:{time.time_ns()}", event_type="webhook.test",
        payload={"message": "Test event from the dunning back office"},
    )
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.PENDING).update(
        status=WebhookDelivery.Status.SENDING, attempts=F("attempts") + 1, last_attempt_at=now, updated_at=now
    )
    if claimed:
        delivery.refresh_from_db()
        deliver_one(delivery, now)
    return delivery
