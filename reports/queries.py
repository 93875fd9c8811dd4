"""Recovery reports, computed by the database (values/annotate/aggregate), never row by row.

Every report takes a ReportFilter (date range on when the payment failed, or when the attempt was
made, and an optional currency). Money columns only appear when one currency is chosen: amounts in
different currencies are never added up.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import (
    Case,
    CharField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, ExtractHour, TruncMonth, TruncWeek
from django.utils import timezone

from billing.models import PaymentAttempt
from customers.models import Customer
from dunning.models import CaseEvent, DunningCase
from dunning.timeline import EventKind

RECOVERED = DunningCase.Status.RECOVERED
EXHAUSTED = DunningCase.Status.EXHAUSTED
# Declines that a retry of the same card will not fix (Stripe's "do not retry" advice, Visa category 1).
HARD_DECLINES = ["expired_card", "lost_card", "stolen_card", "pickup_card", "fraudulent", "incorrect_number",
                 "invalid_account", "restricted_card", "card_not_supported", "revocation_of_authorization",
                 "transaction_not_allowed", "do_not_try_again"]
RETRY_SOURCES = [PaymentAttempt.Source.RETRY, PaymentAttempt.Source.MANUAL, PaymentAttempt.Source.PORTAL]
TTR_BUCKETS = [(1, "under 1 day"), (3, "1-3 days"), (7, "3-7 days"), (14, "7-14 days"), (30, "14-30 days")]


@dataclass(frozen=True)
class ReportFilter:
    start: datetime.date
    end: datetime.date  # inclusive
    currency: str = ""

    @property
    def start_at(self) -> datetime.datetime:
        return datetime.datetime.combine(self.start, datetime.time.min, tzinfo=datetime.UTC)

    @property
    def end_at(self) -> datetime.datetime:
        return datetime.datetime.combine(self.end + datetime.timedelta(days=1), datetime.time.min,
                                         tzinfo=datetime.UTC)

    @classmethod
    def default(cls, today: datetime.date | None = None, currency: str = "") -> ReportFilter:
        today = today or timezone.now().date()
        return cls(start=today - datetime.timedelta(days=89), end=today, currency=currency)


@dataclass
class Report:
    title: str
    columns: list[tuple[str, str]]  # (key, label)
    rows: list[dict]
    chart: dict = field(default_factory=dict)  # {"type": "bar", "label": key, "series": [keys]}
    notes: str = ""


def cases(f: ReportFilter) -> QuerySet[DunningCase]:
    qs = DunningCase.objects.filter(failed_at__gte=f.start_at, failed_at__lt=f.end_at)
    if f.currency:
        qs = qs.filter(invoice__currency=f.currency)
    return qs.order_by()


def case_metrics(f: ReportFilter) -> dict:
    metrics = {
        "cases": Count("id"),
        "recovered": Count("id", filter=Q(status=RECOVERED)),
        "exhausted": Count("id", filter=Q(status=EXHAUSTED)),
    }
    if f.currency:
        metrics["recovered_amount"] = Coalesce(
            Sum("invoice__amount_paid", filter=Q(status=RECOVERED)), Value(Decimal("0"))
        )
    return metrics


def rate(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _with_rates(rows: list[dict]) -> list[dict]:
    for row in rows:
        row["rate"] = rate(row["recovered"], row["cases"])
    return rows


def _case_columns(f: ReportFilter, first: tuple[str, str]) -> list[tuple[str, str]]:
    cols = [first, ("cases", "Cases"), ("recovered", "Recovered"), ("rate", "Recovery rate %"),
            ("exhausted", "Exhausted")]
    if f.currency:
        cols.append(("recovered_amount", f"Recovered revenue ({f.currency})"))
    return cols


def _case_chart(f: ReportFilter, label: str) -> dict:
    series = ["recovered_amount"] if f.currency else ["recovered"]
    return {"type": "bar", "label": label, "series": series, "line": "rate"}


def by_period(f: ReportFilter, period: str = "month") -> Report:
    trunc = TruncWeek if period == "week" else TruncMonth
    rows = list(
        cases(f).annotate(period=trunc("failed_at")).values("period").annotate(**case_metrics(f)).order_by("period")
    )
    for row in rows:
        row["period"] = row["period"].date().isoformat() if hasattr(row["period"], "date") else str(row["period"])
    return Report(f"Recovery by {period} of failure", _case_columns(f, ("period", period.title())),
                  _with_rates(rows), _case_chart(f, "period"))


def by_campaign(f: ReportFilter) -> Report:
    rows = list(
        cases(f).annotate(name=F("campaign__name")).values("name").annotate(**case_metrics(f)).order_by("name")
    )
    return Report("Recovery by campaign", _case_columns(f, ("name", "Campaign")), _with_rates(rows),
                  _case_chart(f, "name"))


def by_segment(f: ReportFilter) -> Report:
    rows = list(
        cases(f).annotate(segment=Coalesce(F("customer__segment"), Value(""))).values("segment")
        .annotate(**case_metrics(f)).order_by("segment")
    )
    for row in rows:
        row["segment"] = row["segment"] or "(none)"
    return Report("Recovery by segment", _case_columns(f, ("segment", "Segment")), _with_rates(rows),
                  _case_chart(f, "segment"))


def by_currency(f: ReportFilter) -> Report:
    metrics = case_metrics(f)
    metrics["recovered_amount"] = Coalesce(Sum("invoice__amount_paid", filter=Q(status=RECOVERED)),
                                           Value(Decimal("0")))
    rows = list(cases(f).annotate(cur=F("invoice__currency")).values("cur").annotate(**metrics).order_by("cur"))
    cols = [("cur", "Currency"), ("cases", "Cases"), ("recovered", "Recovered"), ("rate", "Recovery rate %"),
            ("exhausted", "Exhausted"), ("recovered_amount", "Recovered revenue (own currency)")]
    return Report("Recovery by currency", cols, _with_rates(rows),
                  {"type": "bar", "label": "cur", "series": ["recovered"], "line": "rate"})


def decline_class():
    return Case(
        When(decline_code="", then=Value("none")),
        When(decline_code__in=HARD_DECLINES, then=Value("hard")),
        default=Value("soft"),
        output_field=CharField(),
    )


def by_decline(f: ReportFilter) -> Report:
    rows = list(
        cases(f).annotate(decline_class=decline_class()).values("decline_class", "decline_code")
        .annotate(**case_metrics(f)).order_by("decline_class", "decline_code")
    )
    for row in rows:
        row["code"] = f"{row['decline_class']}: {row['decline_code'] or '(none)'}"
    cols = _case_columns(f, ("decline_class", "Class"))
    cols.insert(1, ("decline_code", "Decline code"))
    return Report("Recovery by decline class and code", cols, _with_rates(rows), _case_chart(f, "code"))


def by_step(f: ReportFilter) -> Report:
    """Recovered cases by the last step that ran before the payment (case.recovered's last_step)."""
    qs = cases(f).filter(status=RECOVERED)
    metrics = {"recovered": Count("id")}
    if f.currency:
        metrics["recovered_amount"] = Coalesce(Sum("invoice__amount_paid"), Value(Decimal("0")))
    rows = list(
        qs.values("current_step__campaign__name", "current_step__position", "current_step__action")
        .annotate(**metrics).order_by("current_step__campaign__name", "current_step__position")
    )
    total = sum(r["recovered"] for r in rows)
    for row in rows:
        if row["current_step__position"] is None:
            row["step"] = "before the first step"
        else:
            row["step"] = (f"{row['current_step__campaign__name']} #{row['current_step__position']} "
                           f"{row['current_step__action']}")
        row["share"] = rate(row["recovered"], total)
    cols = [("step", "Last step before payment"), ("recovered", "Recovered"), ("share", "Share of recoveries %")]
    if f.currency:
        cols.append(("recovered_amount", f"Recovered revenue ({f.currency})"))
    return Report("Recoveries by the step that ran last", cols, rows,
                  {"type": "bar", "label": "step", "series": ["recovered"]})


def by_channel(f: ReportFilter) -> Report:
    """Cases that were sent a message on each channel, and how many of them recovered."""
    events = CaseEvent.objects.filter(kind=EventKind.MESSAGE_QUEUED, case__failed_at__gte=f.start_at,
                                      case__failed_at__lt=f.end_at)
    if f.currency:
        events = events.filter(case__invoice__currency=f.currency)
    rows = list(
        events.order_by().annotate(channel=KeyTextTransform("channel", "payload")).values("channel")
        .annotate(cases=Count("case_id", distinct=True),
                  recovered=Count("case_id", distinct=True, filter=Q(case__status=RECOVERED)),
                  messages=Count("id"))
        .order_by("channel")
    )
    for row in rows:
        row["rate"] = rate(row["recovered"], row["cases"])
        row["messages_per_recovery"] = round(row["messages"] / row["recovered"], 2) if row["recovered"] else None
    cols = [("channel", "Channel"), ("cases", "Cases messaged"), ("recovered", "Recovered"),
            ("rate", "Recovery rate %"), ("messages", "Messages"), ("messages_per_recovery", "Messages per recovery")]
    return Report("Recovery by channel", cols, rows,
                  {"type": "bar", "label": "channel", "series": ["recovered"], "line": "rate"},
                  notes="A case messaged on several channels counts once under each.")


def _day(value) -> str:
    """A truncated date as YYYY-MM-DD (a subquery's value arrives without Django's tz conversion)."""
    return value.date().isoformat() if hasattr(value, "date") else str(value)[:10]


def involuntary_churn(f: ReportFilter) -> Report:
    """Exhausted cases (the campaign ran out without payment) and the MRR of the customers lost."""
    exhausted = DunningCase.objects.filter(status=EXHAUSTED, closed_at__gte=f.start_at, closed_at__lt=f.end_at)
    if f.currency:
        exhausted = exhausted.filter(invoice__currency=f.currency)
    per_month = {
        _day(r["month"]): r["n"]
        for r in exhausted.order_by().annotate(month=TruncMonth("closed_at")).values("month").annotate(n=Count("id"))
    }
    first_loss = (
        exhausted.filter(customer_id=OuterRef("pk")).order_by("closed_at")
        .annotate(month=TruncMonth("closed_at")).values("month")[:1]
    )
    customers = Customer.objects.annotate(churn_month=Subquery(first_loss)).filter(churn_month__isnull=False)
    if f.currency:
        customers = customers.filter(currency=f.currency)
    lost = {
        _day(r["churn_month"]): r
        for r in customers.order_by().values("churn_month").annotate(customers=Count("id"), mrr=Sum("mrr"))
    }
    rows = []
    for month in sorted(set(per_month) | set(lost)):
        row = {"month": month,
               "exhausted": per_month.get(month, 0), "customers": lost.get(month, {}).get("customers", 0)}
        if f.currency:
            row["mrr"] = lost.get(month, {}).get("mrr") or Decimal("0")
        rows.append(row)
    cols = [("month", "Month"), ("exhausted", "Exhausted cases"), ("customers", "Customers lost")]
    if f.currency:
        cols.append(("mrr", f"MRR lost ({f.currency})"))
    return Report("Involuntary churn", cols, rows,
                  {"type": "bar", "label": "month", "series": ["mrr" if f.currency else "customers"]},
                  notes="A customer counts once, in the month of their first exhausted case in the range.")


def _duration():
    return ExpressionWrapper(F("closed_at") - F("failed_at"), output_field=DurationField())


def median_days(qs: QuerySet[DunningCase]) -> float | None:
    """Median days from failure to recovery, by ordering in SQL (two small queries, any database)."""
    qs = qs.filter(status=RECOVERED, closed_at__isnull=False).annotate(d=_duration()).order_by("d")
    n = qs.count()
    if not n:
        return None
    mids = list(qs.values_list("d", flat=True)[(n - 1) // 2: n // 2 + 1])
    total = sum((m.total_seconds() for m in mids), 0.0) / len(mids)
    return round(total / 86400, 1)


def time_to_recover(f: ReportFilter) -> Report:
    whens = [When(d__lt=datetime.timedelta(days=limit), then=Value(i)) for i, (limit, _label) in enumerate(TTR_BUCKETS)]
    qs = cases(f).filter(status=RECOVERED, closed_at__isnull=False).annotate(d=_duration())
    rows = list(
        qs.annotate(bucket=Case(*whens, default=Value(len(TTR_BUCKETS)), output_field=IntegerField()))
        .values("bucket").annotate(recovered=Count("id")).order_by("bucket")
    )
    labels = [label for _limit, label in TTR_BUCKETS] + ["30 days or more"]
    total = sum(r["recovered"] for r in rows)
    for row in rows:
        row["bucket"] = labels[row["bucket"]]
        row["share"] = rate(row["recovered"], total)
    median = median_days(cases(f))
    return Report("Time to recover", [("bucket", "Days from failure to payment"), ("recovered", "Recovered"),
                                      ("share", "Share %")], rows,
                  {"type": "bar", "label": "bucket", "series": ["recovered"]},
                  notes=f"Median: {median} days." if median is not None else "No recoveries in the range.")


# Attempts that reached an answer: pending ones have none yet, cancelled ones were never sent.
UNANSWERED = [PaymentAttempt.Outcome.PENDING, PaymentAttempt.Outcome.CANCELLED]


def attempts(f: ReportFilter) -> QuerySet[PaymentAttempt]:
    qs = PaymentAttempt.objects.filter(
        created_at__gte=f.start_at, created_at__lt=f.end_at, source__in=RETRY_SOURCES
    ).exclude(outcome__in=UNANSWERED)
    if f.currency:
        qs = qs.filter(currency=f.currency)
    return qs.order_by()


ATTEMPT_METRICS = {
    "attempts": Count("id"),
    "succeeded": Count("id", filter=Q(outcome=PaymentAttempt.Outcome.SUCCEEDED)),
}


def _attempt_rows(rows: list[dict]) -> list[dict]:
    for row in rows:
        row["success_rate"] = rate(row["succeeded"], row["attempts"])
    return rows


def retry_by_attempt_number(f: ReportFilter) -> Report:
    earlier = (
        PaymentAttempt.objects.filter(invoice_id=OuterRef("invoice_id"), source__in=RETRY_SOURCES)
        .exclude(outcome__in=UNANSWERED)
        .filter(Q(created_at__lt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), id__lte=OuterRef("id")))
        .order_by().values("invoice_id").annotate(n=Count("id")).values("n")
    )
    rows = list(
        attempts(f).annotate(attempt_no=Subquery(earlier, output_field=IntegerField())).values("attempt_no")
        .annotate(**ATTEMPT_METRICS).order_by("attempt_no")
    )
    cols = [("attempt_no", "Attempt number"), ("attempts", "Attempts"), ("succeeded", "Succeeded"),
            ("success_rate", "Success rate %")]
    return Report("Retry success by attempt number", cols, _attempt_rows(rows),
                  {"type": "bar", "label": "attempt_no", "series": ["attempts"], "line": "success_rate"},
                  notes="Attempt number counts every earlier charge of the same invoice "
                        "by the engine, staff or portal.")


def retry_by_hour(f: ReportFilter) -> Report:
    rows = list(
        attempts(f).annotate(hour=ExtractHour("created_at", tzinfo=datetime.UTC)).values("hour")
        .annotate(**ATTEMPT_METRICS).order_by("hour")
    )
    cols = [("hour", "Hour (UTC)"), ("attempts", "Attempts"), ("succeeded", "Succeeded"),
            ("success_rate", "Success rate %")]
    return Report("Retry success by hour of day", cols, _attempt_rows(rows),
                  {"type": "bar", "label": "hour", "series": ["attempts"], "line": "success_rate"})


REPORTS = {
    "period": ("Recovery by month", by_period),
    "campaign": ("Recovery by campaign", by_campaign),
    "step": ("Last step before payment", by_step),
    "channel": ("Recovery by channel", by_channel),
    "decline": ("Recovery by decline class and code", by_decline),
    "segment": ("Recovery by segment", by_segment),
    "currency": ("Recovery by currency", by_currency),
    "churn": ("Involuntary churn", involuntary_churn),
    "time-to-recover": ("Time to recover", time_to_recover),
    "retry-attempt": ("Retry success by attempt number", retry_by_attempt_number),
    "retry-hour": ("Retry success by hour of day", retry_by_hour),
}
