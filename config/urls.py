from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/reports/", include("reports.urls")),
    path("admin/", admin.site.urls),
    path("portal/", include("dunning.portal.urls")),
    # Email tracking webhooks of every ESP anymail supports, e.g. /anymail/postmark/tracking/.
    path("anymail/", include("anymail.urls")),
    path("notifications/", include("notifications.urls")),
]
