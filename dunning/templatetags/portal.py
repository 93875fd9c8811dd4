"""Money and dates for portal pages, formatted for the active language by Babel."""

from __future__ import annotations

from babel.dates import format_date
from django import template
from django.utils import translation

from billing.money import format_money

register = template.Library()


def _locale() -> str:
    return (translation.get_language() or "en").replace("-", "_")


@register.filter
def money(amount, currency: str) -> str:
    return format_money(amount, currency, _locale())


@register.filter
def longdate(value) -> str:
    return format_date(value, format="long", locale=_locale()) if value else ""
