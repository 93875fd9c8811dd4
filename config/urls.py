from django.contrib import admin
from django.urls import include, path

from dunning.stripe_webhooks import stripe_webhook

urlpatterns = [
    path("admin/reports/", include("reports.urls")),
    path("admin/", admin.site.urls),
    path("webhooks/stripe/", stripe_webhook, name="stripe-webhook"),
    path("portal/", include("dunning.portal.urls")),
    # Email tracking webhooks of every ESP anymail supports, e.g. /anymail/postmark/tracking/.
    path("anymail/", include("anymail.urls")),
    path("notifications/", include("notifications.urls")),
]
