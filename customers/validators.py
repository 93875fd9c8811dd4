"""Validators shared by every app (customers is the bottom layer: it imports no other app)."""

from __future__ import annotations

import zoneinfo

from babel.numbers import list_currencies
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

