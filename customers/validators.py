"""Validators shared by every app (customers is the bottom layer: it imports no other app)."""

from __future__ import annotations

import zoneinfo

from babel.numbers import list_currencies
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

_CURRENCIES = frozenset(list_currencies())


def validate_currency(value: str) -> None:
    if not isinstance(value, str) or value not in _CURRENCIES:
        raise ValidationError(
            _("%(value)s is not an ISO 4217 currency code (e.g. USD, EUR, JPY)."),
            code="invalid_currency",
            params={"value": value},
        )


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(
            _("%(value)s is not an IANA time zone (e.g. Europe/Rome)."),
            code="invalid_timezone",
            params={"value": value},
        ) from None


def supported_locales() -> list[str]:
    return [code for code, _name in settings.LANGUAGES]


def normalize_locale(value: str | None) -> str:
    """Map 'es-MX', 'ja_JP' or an unsupported language to one of the supported locales."""
    if not value:
        return settings.LANGUAGE_CODE
    base = value.replace("_", "-").split("-")[0].lower()
    return base if base in supported_locales() else settings.LANGUAGE_CODE
