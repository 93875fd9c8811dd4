from csp.decorators import csp_update
from django.contrib import admin
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from integrations.stripe_webhooks import stripe_webhook

# Swagger UI's assets are served locally (drf-spectacular-sidecar) and its script is a separate file;
# only its few inline styles need an exception to the site-wide CSP, and only on this page.
api_docs = csp_update({"style-src": ["'unsafe-inline'"]})(SpectacularSwaggerSplitView.as_view(url_name="api-schema"))


def favicon(request):
    """Browsers ask for /favicon.ico on pages that name no icon (the API's JSON, for one)."""
    return redirect(static("favicon.svg"))


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("favicon.ico", favicon, name="favicon"),
    path("admin/reports/", include("reports.urls")),
    path("admin/", admin.site.urls),
    path("webhooks/stripe/", stripe_webhook, name="stripe-webhook"),
    path("portal/", include("dunning.portal.urls")),
    # Email tracking webhooks of every ESP anymail supports, e.g. /anymail/postmark/tracking/.
    path("anymail/", include("anymail.urls")),
    path("notifications/", include("notifications.urls")),
    path("api/v1/", include("integrations.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", api_docs, name="api-docs"),
]
