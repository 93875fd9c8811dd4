from django.contrib import admin
from django.urls import path

from reports import views

app_name = "reports"
urlpatterns = [
    path("", admin.site.admin_view(views.report_index), name="index"),
    path("experiments/<int:campaign_id>/", admin.site.admin_view(views.experiment_view), name="experiment"),
    path("<slug:slug>/", admin.site.admin_view(views.report_view), name="report"),
]
