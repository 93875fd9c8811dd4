from django.urls import include, path, re_path
from rest_framework.routers import DefaultRouter

from integrations.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.include_format_suffixes = False  # JSON only: no "customers.json" twin of every pattern to try
# The busiest endpoint first: URL resolution tries the patterns in this order.
router.register("payment-events", views.PaymentEventViewSet)
router.register("customers", views.CustomerViewSet)
router.register("payment-methods", views.PaymentMethodViewSet)
router.register("invoices", views.InvoiceViewSet)
router.register("cases", views.CaseViewSet)
router.register("campaigns", views.CampaignViewSet)
router.register("notifications", views.NotificationViewSet)

app_name = "api"
urlpatterns = [
    path("", include(router.urls)),
    path("reports/summary/", views.ReportSummaryView.as_view(), name="report-summary"),
    path("ping/", views.ping, name="ping"),
    re_path(r"^.*$", views.not_found),
]
