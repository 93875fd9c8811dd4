"""The figures on the admin index (the operator's dashboard), each with the changelist behind it."""

from __future__ import annotations

import datetime
from urllib.parse import urlencode

from django.db.models import Count, DecimalField, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import TruncWeek
from django.urls import reverse
from django.utils import timezone

from dunning.models import DunningCase, WorkItem

RECOVERED = DunningCase.Status.RECOVERED
EXHAUSTED = DunningCase.Status.EXHAUSTED


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat()


def case_list_url(**params) -> str:
    return reverse("admin:dunning_dunningcase_changelist") + "?" + urlencode(params)


def work_list_url(**params) -> str:
    return reverse("admin:dunning_workitem_changelist") + "?" + urlencode(params)


def week_start(now: datetime.datetime) -> datetime.datetime:
    today = now.astimezone(datetime.UTC).date()
    monday = today - datetime.timedelta(days=today.weekday())
    return datetime.datetime.combine(monday, datetime.time.min, tzinfo=datetime.UTC)


def dashboard_data(now: datetime.datetime | None = None, weeks: int = 12) -> dict:
    now = now or timezone.now()
    remaining = ExpressionWrapper(F("invoice__amount_due") - F("invoice__amount_paid"),
                                  output_field=DecimalField(max_digits=14, decimal_places=4))
    at_risk = [
        {"currency": row["cur"], "amount": row["amount"], "cases": row["cases"],
         "url": case_list_url(status__in="active,paused", invoice__currency=row["cur"])}
        # Joined by primary key to the open invoices only (the status index), not the whole table.
        for row in DunningCase.objects.open().filter(invoice__status="open").order_by()
        .values(cur=F("invoice__currency"))
        .annotate(amount=Sum(remaining), cases=Count("id")).order_by("cur")
    ]

    start = week_start(now)
    # Three index-backed counts are cheaper than one pass over every case.
    week = {
        "opened": DunningCase.objects.filter(failed_at__gte=start).count(),
        "recovered": DunningCase.objects.filter(status=RECOVERED, closed_at__gte=start).count(),
        "exhausted": DunningCase.objects.filter(status=EXHAUSTED, closed_at__gte=start).count(),
    }
    this_week = {
        "start": start,
        "opened": {"n": week["opened"], "url": case_list_url(failed_at__gte=_iso(start))},
        "recovered": {"n": week["recovered"], "url": case_list_url(status=RECOVERED, closed_at__gte=_iso(start))},
        "exhausted": {"n": week["exhausted"], "url": case_list_url(status=EXHAUSTED, closed_at__gte=_iso(start))},
    }

    rates = []
    for days in (30, 90):
        since = now - datetime.timedelta(days=days)
        counts = DunningCase.objects.filter(failed_at__gte=since).order_by().aggregate(
            cases=Count("id"), recovered=Count("id", filter=Q(status=RECOVERED))
        )
        rates.append({
            "days": days, **counts,
            "rate": round(100 * counts["recovered"] / counts["cases"], 1) if counts["cases"] else None,
            "url": case_list_url(failed_at__gte=_iso(since)),
            "recovered_url": case_list_url(failed_at__gte=_iso(since), status=RECOVERED),
        })

    since = start - datetime.timedelta(weeks=weeks - 1)
    revenue_rows = list(
        DunningCase.objects.filter(status=RECOVERED, closed_at__gte=since).order_by()
        .annotate(week=TruncWeek("closed_at")).values("week", "currency")
        .annotate(amount=Sum("recovered_amount"), cases=Count("id")).order_by("week", "currency")
    )
    labels = [(since + datetime.timedelta(weeks=i)).date().isoformat() for i in range(weeks)]
    series: dict[str, list[float]] = {}
    for row in revenue_rows:
        label = row["week"].date().isoformat() if hasattr(row["week"], "date") else str(row["week"])[:10]
        values = series.setdefault(row["currency"], [0.0] * weeks)
        if label in labels:
            values[labels.index(label)] = float(row["amount"] or 0)

    queue = {
        row["kind"]: row["n"]
        for row in WorkItem.objects.filter(
            Q(status=WorkItem.Status.OPEN) | Q(status=WorkItem.Status.SNOOZED, snoozed_until__lte=now)
        ).order_by().values("kind").annotate(n=Count("id"))
    }
    work = [
        {"kind": value, "label": label, "n": queue.get(value, 0), "url": work_list_url(kind=value, queue="actionable")}
        for value, label in WorkItem.Kind.choices
    ]
    return {
        "now": now,
        "at_risk": at_risk,
        "this_week": this_week,
        "rates": rates,
        "revenue_chart": {"labels": labels, "series": series},
        "work": work,
        "work_total": sum(w["n"] for w in work),
    }
