"""Decline classification: which class a decline belongs to and how long to wait before a retry.

The table is data (billing.DeclineRule, editable in the admin). Every code of a decline that has a
rule counts -- the gateway's decline code, the raw network response code, the Mastercard advice
code -- and the strictest class wins (hard > needs a new method > soft > retry soon), with the longest
retry-after. A decline no rule knows falls back to ``settings.DECLINE_DEFAULT_CLASS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from billing.models import DeclineRule
from customers.models import PaymentMethod

RETRY_SOON = "retry_soon"
SOFT = "soft"
NEEDS_NEW_METHOD = "needs_new_method"
HARD = "hard"
SEVERITY = {RETRY_SOON: 0, SOFT: 1, NEEDS_NEW_METHOD: 2, HARD: 3}
# Classes after which the same payment method must not be charged again.
STOPS_METHOD = frozenset({NEEDS_NEW_METHOD, HARD})

_VERSION_KEY = "billing:decline-rules:version"
_MAX_AGE = 300.0  # seconds a process keeps its copy even if the cache lost the version key


@dataclass(frozen=True, slots=True)
class Classification:
    decline_class: str
    retry_after: timedelta | None = None
    matched: tuple[str, ...] = ()

    @property
    def stops_method(self) -> bool:
        return self.decline_class in STOPS_METHOD


_BRANDS: dict[str, str] = {}


def normalise_brand(brand: str) -> str:
    found = _BRANDS.get(brand)
    if found is None:
        found = (brand or "").lower().replace(" ", "").replace("_", "")
        if found in ("mc", "master"):
            found = "mastercard"
        if len(_BRANDS) < 1000:
            _BRANDS[brand] = found
    return found


def normalise_code(kind: str, code: str) -> str:
    code = (code or "").strip()
    if kind == "decline_code":
        return code.lower()
    code = code.upper()
    if code.isdigit() and len(code) == 1:
        return "0" + code  # advice code "3" is "03"
    return code


class DeclineTable:
    """An in-memory copy of the rules; classify() does only dictionary look-ups."""

    def __init__(self, rules, default_class: str = SOFT):
        self.default_class = default_class
        self.rules: dict[tuple[str, str, str], tuple[str, int | None, str]] = {}
        for kind, network, code, decline_class, hours, label in rules:
            self.rules[(kind, network, normalise_code(kind, code))] = (decline_class, hours, label)
        self._memo: dict[tuple[str, str, str, str], Classification] = {}

    @classmethod
    def from_db(cls) -> DeclineTable:
        rows = DeclineRule.objects.values_list("kind", "network", "code", "decline_class", "retry_after_hours")
        return cls(((k, n, c, dc, h, f"{k}:{n + ':' if n else ''}{c}") for k, n, c, dc, h in rows),
                   default_class=settings.DECLINE_DEFAULT_CLASS)

    def classify(self, decline_code: str = "", network_code: str = "", advice_code: str = "",
                 brand: str = "") -> Classification:
        key = (decline_code, network_code, advice_code, brand)
        found = self._memo.get(key)
        if found is not None:
            return found
        network = normalise_brand(brand)
        best_class, best_hours, matched = None, None, []
        for kind, code in (("decline_code", decline_code), ("network_code", network_code),
                           ("advice_code", advice_code)):
            if not code:
                continue
            code = normalise_code(kind, code)
            for net in ("", network) if network else ("",):
                rule = self.rules.get((kind, net, code))
                if rule is None:
                    continue
                decline_class, hours, label = rule
                matched.append(label)
                if best_class is None or SEVERITY[decline_class] > SEVERITY[best_class]:
                    best_class = decline_class
                if hours is not None and (best_hours is None or hours > best_hours):
                    best_hours = hours
        found = Classification(
            best_class or self.default_class,
            timedelta(hours=best_hours) if best_hours is not None else None,
            tuple(matched),
        )
        if len(self._memo) < 10000:
            self._memo[key] = found
        return found


_loaded: tuple[object, float, DeclineTable] | None = None


def get_table() -> DeclineTable:
    """The current table, reloaded when staff change a rule (cache version) or after a few minutes."""
    global _loaded
    version = cache.get(_VERSION_KEY)
    now = time.monotonic()
    if _loaded is not None and _loaded[0] == version and version is not None and now - _loaded[1] < _MAX_AGE:
        return _loaded[2]
    if version is None:
        version = time.time_ns()
        cache.add(_VERSION_KEY, version, None)
        version = cache.get(_VERSION_KEY, version)
    table = DeclineTable.from_db()
    _loaded = (version, now, table)
    return table


def _bump() -> None:
    global _loaded
    _loaded = None
    cache.set(_VERSION_KEY, time.time_ns(), None)


def rules_changed(**kwargs) -> None:
    """Signal receiver: a rule was saved or deleted; every process reloads on its next look-up.

    Bumped at once (the saving transaction sees its own edit) and again after the commit, so no
    process keeps a copy it read while the edit was still uncommitted.
    """
    _bump()
    transaction.on_commit(_bump)


def classify(decline_code: str = "", network_code: str = "", advice_code: str = "", brand: str = "") -> Classification:
    return get_table().classify(decline_code, network_code, advice_code, brand)


def classify_attempt(attempt, *, at=None) -> str:
    """Classify a failed attempt; a decline that rules out the method blocks it for further charges."""
    method = attempt.payment_method
    found = classify(attempt.decline_code, attempt.network_code, attempt.advice_code,
                     method.brand if method else "")
    if found.stops_method and method is not None and attempt.decline_code != "no_payment_method":
        PaymentMethod.objects.filter(pk=method.pk, charge_blocked_at__isnull=True).update(
            charge_blocked_at=at or timezone.now(),
            charge_blocked_reason=f"{found.decline_class}: {attempt.decline_code or attempt.advice_code}"[:100],
        )
        method.charge_blocked_at = method.charge_blocked_at or at or timezone.now()
    return found.decline_class
