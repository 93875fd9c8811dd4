from django import template

from reports.dashboard import dashboard_data

register = template.Library()


@register.inclusion_tag("reports/dashboard.html", takes_context=True)
def cockpit_dashboard(context):
    request = context["request"]
    if not request.user.has_perm("dunning.view_dunningcase"):
        return {"hidden": True}
    d = dashboard_data()
    chart = d["revenue_chart"]
    revenue_chart = {
        "type": "line",
        "labels": chart["labels"],
        "datasets": [{"label": currency, "data": values, "yAxisID": "y"}
                     for currency, values in chart["series"].items()],
    }
    return {"d": d, "revenue_chart": revenue_chart, "show_reports": request.user.has_perm("reports.view_reports")}
