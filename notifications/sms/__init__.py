"""SMS behind a small interface: a backend class chosen by the SMS_BACKEND dotted path.

Shipped: ``console.ConsoleSmsBackend`` (default: log + one file per message under SMS_FILE_PATH),
``locmem.LocmemSmsBackend`` (tests: ``notifications.sms.locmem.outbox``) and
``twilio.TwilioSmsBackend`` (the official Twilio SDK).
"""

from __future__ import annotations

from notifications.sms.base import SmsBackend, SmsError, get_backend, send_sms

__all__ = ["SmsBackend", "SmsError", "get_backend", "send_sms"]
