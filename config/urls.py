from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/reports/", include("reports.urls")),
    path("admin/", admin.site.urls),
    path("portal/", include("dunning.portal.urls")),
]
