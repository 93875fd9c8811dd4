"""Benchmark: decide the next retry time and class for 100,000 failed attempts in one process.

The decision is dunning.retries.plan (decline class from the table, advice-code waits, network limits
per card, minimum gap, local hour and payday alignment in the customer's time zone), fed with
synthetic attempts built in memory beforehand; only the decisions are timed.

    python -m bench.retries [small|full]
"""

from __future__ import annotations

import datetime
import os
import random
import sys
import time
import zoneinfo

TARGET_PER_SECOND = 20_000
COUNTS = {"small": 10_000, "full": 100_000}


def _setup_django() -> None:
    from django.conf import settings

    if not settings.configured:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        os.environ.setdefault("DEBUG", "true")
        import django

        django.setup()


def _inputs(n: int, now: datetime.datetime, seed: int = 7):
    from billing import limits
    from billing.decline_defaults import DEFAULT_RULES
    from dunning.retries import Policy

    rng = random.Random(seed)
    decline_codes = [code for kind, net, code, *_ in DEFAULT_RULES if kind == "decline_code"]
    common = ["insufficient_funds"] * 6 + ["do_not_honor"] * 3 + ["generic_decline", "expired_card",
                                                                  "processing_error", "card_velocity_exceeded"]
    # Mostly soft declines, as in practice; hard and needs-new-method codes are a minority.
    network_codes = [""] * 14 + ["05", "51", "51", "54", "14", "91"]
    advice_codes = [""] * 20 + ["01", "02", "03", "21", "24", "25", "26", "27", "28", "29", "30"]
    zones = [zoneinfo.ZoneInfo(z) for z in ("UTC", "Europe/Rome", "America/New_York", "Asia/Tokyo",
                                             "Australia/Sydney", "America/Los_Angeles")]
    policies = [Policy(local_hour=10), Policy(local_hour=9, use_paydays=True), Policy(local_hour=None,
                                                                         min_gap=datetime.timedelta(hours=1))]
    brands = ["visa", "mastercard", "amex"]
    rows = []
    for _ in range(n):
        brand = rng.choice(brands)
        k = rng.randint(0, 36)
        times = sorted(now - datetime.timedelta(minutes=rng.randint(1, 30 * 24 * 60)) for _ in range(k))
        code = rng.choice(common) if rng.random() < 0.9 else rng.choice(decline_codes)
        advice = rng.choice(advice_codes) if brand == "mastercard" else ""
        last = (times[-1] if times else now - datetime.timedelta(hours=2), code, rng.choice(network_codes), advice)
        rows.append(dict(tz=rng.choice(zones), policy=rng.choice(policies), brand=brand,
                         usage=limits.CardUsage(times, last), last_invoice_attempt=last[0],
                         method_blocked=rng.random() < 0.02))
    return rows


def run(scale: str = "full") -> list[dict]:
    _setup_django()
    from bench.common import row
    from billing.decline_defaults import DEFAULT_RULES
    from billing.declines import DeclineTable
    from dunning.retries import plan

    n = COUNTS.get(scale, COUNTS["full"])
    now = datetime.datetime(2026, 3, 6, 12, 30, tzinfo=datetime.UTC)
    table = DeclineTable((k, net, code, cls, hours, code) for k, net, code, cls, hours, _d in DEFAULT_RULES)
    rows = _inputs(n, now)
    started = time.perf_counter()
    actions: dict[str, int] = {}
    classes: dict[str, int] = {}
    for item in rows:
        decision = plan(now, table=table, **item)
        actions[decision.action] = actions.get(decision.action, 0) + 1
        classes[decision.decline_class] = classes.get(decision.decline_class, 0) + 1
    elapsed = time.perf_counter() - started
    rate = n / elapsed
    return [
        row(f"retry decisions ({n:,} failed attempts)", float(rate), "decisions/s", target=">= 20,000",
            ratio_to="target of 20,000/s", ratio=rate / TARGET_PER_SECOND,
            note=f"{elapsed:.2f}s; retry now {actions.get('retry', 0):,}, defer {actions.get('defer', 0):,}, "
                 f"stop {actions.get('stop', 0):,}; "
                 + ", ".join(f"{k or 'none'} {v:,}" for k, v in sorted(classes.items()))),
    ]

if __name__ == "__main__":
    for result in run(sys.argv[1] if len(sys.argv) > 1 else "full"):
        print(f"{result['name']}: {result['value']:,.0f} {result['unit']} (target {result['target']}, "
              f"ratio {result['ratio']:.2f}) [{result['note']}]")
