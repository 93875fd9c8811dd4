"""Twilio backend on the official SDK. Settings: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and either
TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER (docs/notifications.md)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from notifications.sms.base import SmsBackend, SmsError

# Twilio error codes meaning "this number will not take a message" (www.twilio.com/docs/api/errors).
PERMANENT_CODES = {21211, 21214, 21217, 21219, 21407, 21408, 21612, 21614, 30003, 30005, 30006}
UNSUBSCRIBED_CODE = 21610  # the recipient replied STOP


class TwilioSmsBackend(SmsBackend):
    def __init__(self) -> None:
        if not (settings.TWILIO_ACCOUNT_SID and settings.TWILIO_AUTH_TOKEN):
            raise ImproperlyConfigured("SMS_BACKEND is Twilio: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        if not (settings.TWILIO_MESSAGING_SERVICE_SID or settings.TWILIO_FROM_NUMBER):
            raise ImproperlyConfigured("Set TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER")
        self.client = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN)
        if settings.TWILIO_API_BASE_URL:
            self.client.api.base_url = settings.TWILIO_API_BASE_URL.rstrip("/")

    def send(self, to: str, body: str, *, reference: str = "") -> str:
        kwargs = {"to": to, "body": body}
        if settings.TWILIO_MESSAGING_SERVICE_SID:
            kwargs["messaging_service_sid"] = settings.TWILIO_MESSAGING_SERVICE_SID
        else:
            kwargs["from_"] = settings.TWILIO_FROM_NUMBER
        try:
            message = self.client.messages.create(**kwargs)
        except TwilioRestException as exc:
            opted_out = exc.code == UNSUBSCRIBED_CODE
            permanent = opted_out or exc.code in PERMANENT_CODES or exc.status in (400, 401, 403, 404)
            # Rate limits and server errors are worth another try.
            if exc.status == 429 or (exc.status or 0) >= 500:
                permanent = False
            raise SmsError(f"Twilio {exc.status} error {exc.code}: {exc.msg}", permanent=permanent,
                           opted_out=opted_out) from exc
        except (TwilioException, OSError) as exc:  # network trouble (requests errors are OSErrors)
            raise SmsError(f"Twilio: {exc}", permanent=False) from exc
        return message.sid
