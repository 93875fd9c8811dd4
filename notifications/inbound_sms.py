"""Replies to our SMS: STOP-type keywords opt the number out, START opts it back in (TCPA)."""

from __future__ import annotations

import re

from customers.models import Customer
from notifications import preferences
from notifications.models import Channel

STOP_WORDS = {"STOP", "STOPALL", "QUIT", "END", "REVOKE", "OPT OUT", "OPTOUT", "CANCEL", "UNSUBSCRIBE"}
START_WORDS = {"START", "UNSTOP"}

# One confirmation per change, in the customer's language.
CONFIRMATIONS = {
    "stop": {
        "en": "{merchant}: you will receive no more text messages from us. Reply START to opt back in.",
        "es": "{merchant}: ya no recibirá más SMS nuestros. Responda START para volver a recibirlos.",
        "it": "{merchant}: non riceverà più SMS da noi. Risponda START per riattivarli.",
        "ja": "{merchant}：今後SMSは送信されません。再開するには START と返信してください。",
        "uk": "{merchant}: ви більше не отримуватимете від нас SMS. Щоб відновити, надішліть START.",
    },
    "start": {
        "en": "{merchant}: you will receive text messages from us again. Reply STOP to opt out.",
        "es": "{merchant}: volverá a recibir nuestros SMS. Responda STOP para darse de baja.",
        "it": "{merchant}: riceverà di nuovo i nostri SMS. Risponda STOP per disattivarli.",
        "ja": "{merchant}：SMSの受信を再開しました。停止するには STOP と返信してください。",
        "uk": "{merchant}: ви знову отримуватимете наші SMS. Щоб відписатися, надішліть STOP.",
    },
}


def keyword(body: str) -> str:
    """'stop', 'start' or '' for an inbound message body."""
    text = re.sub(r"\s+", " ", (body or "").strip().upper()).strip(" .!")
    if text in STOP_WORDS:
        return "stop"
    if text in START_WORDS:
        return "start"
    return ""


def handle_inbound(from_number: str, body: str, merchant: str) -> str:
    """Apply a reply from ``from_number``; returns the confirmation to send back ('' for none)."""
    action = keyword(body)
    if not action:
        return ""
    customers = list(Customer.objects.filter(phone=from_number))
    if not customers:
        return ""
    changed = preferences.set_flag([c.pk for c in customers], preferences.OPT_OUT_FIELDS[Channel.SMS],
                                   action == "stop", source=f"sms:{action.upper()}")
    if not changed:
        return ""  # already in that state: no second confirmation
    locale = changed[0].locale
    texts = CONFIRMATIONS[action]
    return texts.get(locale, texts["en"]).format(merchant=merchant)
