from django.urls import path

from dunning.portal import views

app_name = "portal"

urlpatterns = [
    path("link/", views.request_link, name="request_link"),
    path("<str:token>/", views.overview, name="overview"),
    path("<str:token>/messages/<int:message_id>/dismiss/", views.dismiss, name="dismiss"),
    path("<str:token>/invoices/<int:invoice_id>/", views.invoice, name="invoice"),
    path("<str:token>/invoices/<int:invoice_id>/pay/", views.pay, name="pay"),
    path("<str:token>/payment-method/", views.payment_method, name="payment_method"),
    path("<str:token>/payment-method/<int:method_id>/", views.payment_method_result, name="payment_method_result"),
    path("<str:token>/plan/", views.plan, name="plan"),
    path("<str:token>/support/", views.support, name="support"),
    path("<str:token>/preferences/", views.preferences, name="preferences"),
]
