from django.urls import path

from notifications import views

app_name = "notifications"
urlpatterns = [
    path("sms/twilio/inbound/", views.twilio_inbound_sms, name="twilio_inbound_sms"),
]
