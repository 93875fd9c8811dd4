"""A logging filter that masks secrets a log line may carry by accident.

Code never logs card data, tokens or message bodies on purpose (tests/test_privacy_retention_logs.py
checks it); this catches what arrives from elsewhere, e.g. Django logging a 404 for a portal link
("Not Found: /portal/<token>/") or a gateway error echoing a payment-method token.
"""

from __future__ import annotations

import logging
import re

_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_TOKEN = re.compile(r"\b(?:tok|pm|card|src|seti|pi|ba|btok)_[A-Za-z0-9][A-Za-z0-9_:.\-]{3,}")
_PORTAL = re.compile(r"(/portal/(?:t/)?)[^/\s?#\"']+")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def redact(text: str) -> str:
    text = _CARD.sub(_card, text)
    text = _TOKEN.sub("[token]", text)
    return _PORTAL.sub(r"\1[token]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
