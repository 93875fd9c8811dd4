"""Card network retry limits, counted per payment method from its payment attempts.

Visa allows 15 reattempts per card per 30 days (20 from May 2025); Mastercard 10 declines per card in
24 hours and 35 in 30 days. Merchant-initiated attempts count (scheduled retries, staff retries,
the billing system's own attempts); payments the customer starts in the portal are counted
separately by the networks and are not limited here. Counters are derived from the attempts table,
so staff see exactly what the engine sees (PaymentMethod admin).
"""

from __future__ import annotations

import bisect
import datetime
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q

from billing.declines import normalise_brand
from billing.models import PaymentAttempt

DAY = timedelta(days=1)
MONTH = timedelta(days=30)
VISA_RAISED_ON = datetime.datetime(2025, 5, 1, tzinfo=datetime.UTC)
# Decline codes written without calling the gateway: they never reached a card network.
LOCAL_CODES = ("no_payment_method", "payment_method_blocked")


@dataclass(frozen=True, slots=True)
class Limit:
    label: str
    window: timedelta
    maximum: int


def limits_for(brand: str, at: datetime.datetime) -> tuple[Limit, ...]:
    brand = normalise_brand(brand)
    if brand == "visa":
        cap = settings.RETRY_LIMIT_VISA_30D if at >= VISA_RAISED_ON else settings.RETRY_LIMIT_VISA_30D_BEFORE_2025_05
        return (Limit("Visa, 30 days", MONTH, cap),)
    if brand == "mastercard":
        return (Limit("Mastercard, 24 hours", DAY, settings.RETRY_LIMIT_MASTERCARD_24H),
                Limit("Mastercard, 30 days", MONTH, settings.RETRY_LIMIT_MASTERCARD_30D))
    return ()


def counted_attempts():
    return PaymentAttempt.objects.filter(
        Q(outcome=PaymentAttempt.Outcome.FAILED) | Q(outcome=PaymentAttempt.Outcome.PENDING)
    ).exclude(source=PaymentAttempt.Source.PORTAL).exclude(decline_code__in=LOCAL_CODES)


@dataclass
class CardUsage:
    """Attempts on one card within the longest window, oldest first, and its most recent decline."""

    times: list[datetime.datetime]
    last_decline: tuple[datetime.datetime, str, str, str] | None = None  # (at, decline, network, advice)

    def count_since(self, since: datetime.datetime) -> int:
        return sum(1 for t in self.times if t > since)


EMPTY = CardUsage([])


def usage_for(method_ids, now: datetime.datetime) -> dict[int, CardUsage]:
    """Usage of many cards with one query (the engine calls it once per batch)."""
    usage: dict[int, CardUsage] = defaultdict(lambda: CardUsage([]))
    if not method_ids:
        return usage
    rows = (
        counted_attempts()
        .filter(payment_method_id__any=list(method_ids), created_at__gt=now - MONTH)
        .order_by("created_at")
        .values_list("payment_method_id", "created_at", "completed_at", "outcome", "decline_code",
                     "network_code", "advice_code")
    )
    for method_id, created, completed, outcome, decline, network, advice in rows:
        entry = usage[method_id]
        entry.times.append(created)
        if outcome == "failed":
            entry.last_decline = (completed or created, decline, network, advice)
    return usage


def next_allowed(usage: CardUsage, brand: str, now: datetime.datetime) -> datetime.datetime | None:
    """None if one more attempt keeps the card within every limit now, else the earliest time it does."""
    earliest = None
    times = usage.times  # oldest first
    for limit in limits_for(brand, now):
        count = len(times) - bisect.bisect_right(times, now - limit.window)
        if count >= limit.maximum:
            # Wait until enough of the oldest attempts have left the rolling window.
            free_at = times[len(times) - limit.maximum] + limit.window
            earliest = free_at if earliest is None else max(earliest, free_at)
    return earliest


def counters(method, now: datetime.datetime) -> list[tuple[str, int, int]]:
    """[(limit label, used, maximum)] for one card, for staff screens."""
    usage = usage_for([method.pk], now).get(method.pk, EMPTY)
    return [(lim.label, usage.count_since(now - lim.window), lim.maximum) for lim in limits_for(method.brand, now)]
