"""JSON for PostgreSQL's jsonb, which refuses the character U+0000 (text echoed from bad input can
carry it): stored as U+FFFD instead, so what is kept differs from the original only in that character."""

from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder


def without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nul(v) for v in value]
    return value


def dumps(value) -> str:
    """json.dumps with Django's encoder (dates, decimals), U+0000 replaced; the walk runs only when needed."""
    text = json.dumps(value, cls=DjangoJSONEncoder)
    return json.dumps(without_nul(value), cls=DjangoJSONEncoder) if "\\u0000" in text else text
