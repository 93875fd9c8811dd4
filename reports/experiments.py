"""A/B test results: each variant against the control, with honest statistics.

Recovery rate with a 95% Wilson interval, and a two-sided two-proportion z-test (pooled standard
error) of each challenger against the control. Counts come from grouped SQL queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Q, Sum

from dunning.models import Campaign, CampaignVariant, CaseEvent
from dunning.timeline import EventKind
from reports.queries import RECOVERED, ReportFilter, cases, median_days

Z95 = 1.959963984540054
ALPHA = 0.05


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ZTest:
    z: float
    p_value: float
    difference: float  # challenger rate minus control rate

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> ZTest | None:
    """Test group 2 (challenger) against group 1 (control); None when it cannot be computed."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None
    z = (p2 - p1) / se
    return ZTest(z=z, p_value=math.erfc(abs(z) / math.sqrt(2)), difference=p2 - p1)


def verdict(test: ZTest | None, *, control_name: str) -> str:
    if test is None:
        return "Not enough data to compare yet."
    direction = "better" if test.difference > 0 else "worse"
    if test.significant:
        return (f"Significantly {direction} than {control_name} "
                f"({test.difference * 100:+.1f} points, p = {test.p_value:.4f}).")
    return (f"Not yet significant: {test.difference * 100:+.1f} points against {control_name} "
            f"(p = {test.p_value:.3f}, needs p < {ALPHA}). Keep the test running.")


def experiment_results(campaign: Campaign, f: ReportFilter) -> list[dict]:
    variants = list(CampaignVariant.objects.filter(experiment=campaign).order_by("-is_control", "id"))
    base = cases(f).filter(variant__experiment=campaign)
    metrics = {"cases": Count("id"), "recovered": Count("id", filter=Q(status=RECOVERED))}
    if f.currency:
        metrics["recovered_amount"] = Sum("invoice__amount_paid", filter=Q(status=RECOVERED))
    counts = {r["variant"]: r for r in base.values("variant").annotate(**metrics)}
    messages = {
        r["case__variant"]: r["n"]
        for r in CaseEvent.objects.filter(kind=EventKind.MESSAGE_QUEUED, case__in=base).order_by()
        .values("case__variant").annotate(n=Count("id"))
    }
    control = next((v for v in variants if v.is_control), variants[0] if variants else None)
    rows = []
    for v in variants:
        c = counts.get(v.pk, {})
        n, x = c.get("cases", 0), c.get("recovered", 0)
        ci = wilson_interval(x, n)
        row = {
            "variant": v, "name": v.name, "is_control": v.pk == control.pk, "weight": v.weight,
            "cases": n, "recovered": x, "rate": round(100 * x / n, 1) if n else None,
            "ci_low": round(100 * ci[0], 1) if ci else None, "ci_high": round(100 * ci[1], 1) if ci else None,
            "recovered_amount": (c.get("recovered_amount") or Decimal("0")) if f.currency else None,
            "median_days": median_days(base.filter(variant=v)),
            "messages": messages.get(v.pk, 0),
            "messages_per_recovery": round(messages.get(v.pk, 0) / x, 2) if x else None,
            "z": None, "p_value": None, "verdict": "Control" if v.pk == control.pk else "",
        }
        rows.append(row)
    ctrl = next((r for r in rows if r["is_control"]), None)
    for row in rows:
        if row["is_control"] or ctrl is None:
            continue
        test = two_proportion_z_test(ctrl["recovered"], ctrl["cases"], row["recovered"], row["cases"])
        row["z"] = round(test.z, 3) if test else None
        row["p_value"] = round(test.p_value, 4) if test else None
        row["verdict"] = verdict(test, control_name=ctrl["name"])
    return rows
