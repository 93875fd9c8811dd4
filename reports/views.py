"""Report pages under /admin/reports/: a chart, a table and a CSV download for each report."""

from __future__ import annotations

import csv

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.utils import timezone

from billing.models import Invoice
from billing.money import to_amount
from core import exports
from core.admin_paging import distinct_values
from dunning.models import Campaign
from reports import queries
from reports.experiments import experiment_results


class FilterForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    currency = forms.ChoiceField(required=False)
    period = forms.ChoiceField(required=False, choices=[("month", "Month"), ("week", "Week")])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        currencies = distinct_values(Invoice._meta.db_table, "currency")  # an index skip scan, cached
        self.fields["currency"].choices = [("", "All (no amounts)")] + [(c, c) for c in currencies]

    def report_filter(self) -> queries.ReportFilter:
        default = queries.ReportFilter.default(timezone.now().date())
        data = self.cleaned_data if self.is_valid() else {}
        start = data.get("start") or default.start
        end = data.get("end") or default.end
        if end < start:
            start, end = end, start
        return queries.ReportFilter(start=start, end=end, currency=data.get("currency") or "")


MONEY_KEYS = ("recovered_amount", "mrr")


def round_money(rows: list[dict], currency: str) -> None:
    """Show amounts with the currency's minor unit (the by-currency report has one per row)."""
    for row in rows:
        cur = row.get("cur") or currency
        for key in MONEY_KEYS:
            if cur and row.get(key) is not None:
                row[key] = to_amount(row[key], cur)


def bound_form(request) -> FilterForm:
    """The filter form, filled with the default range where the request leaves it out."""
    default = queries.ReportFilter.default(timezone.now().date())
    data = {"start": default.start.isoformat(), "end": default.end.isoformat(), "period": "month"}
    data.update({k: v for k, v in request.GET.items() if v})
    return FilterForm(data)


def _require(request, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied


def chart_config(report: queries.Report) -> dict:
    chart = report.chart
    if not chart:
        return {}
    labels = [str(row.get(chart["label"], "")) for row in report.rows]
    names = dict(report.columns)
    datasets = [
        {"label": names.get(key, key), "data": [float(row.get(key) or 0) for row in report.rows], "yAxisID": "y"}
        for key in chart["series"]
    ]
    if chart.get("line"):
        key = chart["line"]
        datasets.append({"label": names.get(key, key), "type": "line", "yAxisID": "y1",
                         "data": [row.get(key) for row in report.rows]})
    return {"type": chart.get("type", "bar"), "labels": labels, "datasets": datasets}


def _context(request, title: str, **extra) -> dict:
    return {**admin.site.each_context(request), "title": title, "reports": queries.REPORTS, **extra}


def _csv(filename: str, columns: list[tuple[str, str]], rows: list[dict]) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow([label for _key, label in columns])
    for row in rows:
        writer.writerow(["" if row.get(key) is None else exports.neutralize(row.get(key)) for key, _label in columns])
    return response


def report_index(request):
    _require(request, "reports.view_reports")
    experiments = Campaign.objects.filter(variants__isnull=False).distinct().order_by("name")
    return TemplateResponse(request, "reports/index.html",
                            _context(request, "Reports", experiments=experiments))


def report_view(request, slug: str):
    _require(request, "reports.view_reports")
    if slug not in queries.REPORTS:
        raise Http404
    form = bound_form(request)
    flt = form.report_filter()
    _title, func = queries.REPORTS[slug]
    period = form.cleaned_data.get("period") if form.is_valid() else ""
    report = func(flt, period) if slug == "period" and period else func(flt)
    round_money(report.rows, flt.currency)
    if request.GET.get("format") == "csv":
        _require(request, "reports.export_reports")
        return _csv(f"{slug}-{flt.start}-{flt.end}{'-' + flt.currency if flt.currency else ''}.csv",
                    report.columns, report.rows)
    query = request.GET.copy()
    query["format"] = "csv"
    return TemplateResponse(request, "reports/report.html", _context(
        request, report.title, report=report, form=form, slug=slug, flt=flt, chart=chart_config(report),
        csv_query=query.urlencode(), can_export=request.user.has_perm("reports.export_reports"),
    ))


EXPERIMENT_COLUMNS = [
    ("name", "Variant"), ("weight", "Weight"), ("cases", "Cases"), ("recovered", "Recovered"),
    ("rate", "Recovery rate %"), ("ci_low", "95% CI low %"), ("ci_high", "95% CI high %"),
    ("recovered_amount", "Recovered revenue"), ("median_days", "Median days to recover"),
    ("messages_per_recovery", "Messages per recovery"), ("z", "z vs control"), ("p_value", "p-value"),
    ("verdict", "Verdict"),
]


def experiment_view(request, campaign_id: int):
    _require(request, "reports.view_reports")
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    if "start" not in request.GET:  # an experiment is read over its whole life by default
        request.GET = request.GET.copy()
        request.GET["start"] = "2000-01-01"  # cases without a variant never count anyway
    form = bound_form(request)
    flt = form.report_filter()
    rows = experiment_results(campaign, flt)
    round_money(rows, flt.currency)
    if request.GET.get("format") == "csv":
        _require(request, "reports.export_reports")
        return _csv(f"experiment-{campaign.pk}.csv", EXPERIMENT_COLUMNS, rows)
    chart = {
        "type": "bar", "labels": [r["name"] for r in rows],
        "datasets": [
            {"label": "Recovery rate %", "data": [r["rate"] or 0 for r in rows], "yAxisID": "y"},
            {"label": "95% CI low %", "type": "line", "data": [r["ci_low"] for r in rows], "yAxisID": "y",
             "showLine": False},
            {"label": "95% CI high %", "type": "line", "data": [r["ci_high"] for r in rows], "yAxisID": "y",
             "showLine": False},
        ],
    }
    query = request.GET.copy()
    query["format"] = "csv"
    return TemplateResponse(request, "reports/experiment.html", _context(
        request, f"A/B test: {campaign.name}", campaign=campaign, rows=rows, form=form, chart=chart,
        columns=EXPERIMENT_COLUMNS, csv_query=query.urlencode(),
        can_export=request.user.has_perm("reports.export_reports"),
    ))
