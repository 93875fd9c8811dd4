"""Money: Decimal amounts with an ISO 4217 currency, rounded to the currency's minor unit."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import format_currency, get_currency_precision
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from customers.validators import validate_currency


@lru_cache(maxsize=512)
def minor_unit_exponent(currency: str) -> Decimal:
    """Decimal('0.01') for USD, Decimal('1') for JPY, Decimal('0.001') for BHD."""
    validate_currency(currency)
    return Decimal(1).scaleb(-get_currency_precision(currency))


def to_amount(value, currency: str, *, allow_negative: bool = False) -> Decimal:
    """Parse and round an amount for a currency; a clear ValidationError for anything else."""
    validate_currency(currency)
    if isinstance(value, float):
        value = repr(value)
    try:
        amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise ValidationError(_("%(value)s is not a valid amount.") % {"value": value}, code="invalid_amount") from None
    if not amount.is_finite():
        raise ValidationError(_("%(value)s is not a valid amount.") % {"value": value}, code="invalid_amount")
    if amount < 0 and not allow_negative:
        raise ValidationError(
            _("Amounts cannot be negative (got %(value)s).") % {"value": value}, code="negative_amount"
        )
    return amount.quantize(minor_unit_exponent(currency), rounding=ROUND_HALF_UP)


def fits_minor_unit(amount: Decimal, currency: str) -> bool:
    """True when the amount needs no rounding in the currency: 10.50 USD yes; 10.005 USD and 100.5 JPY no."""
    return amount == amount.quantize(minor_unit_exponent(currency))


def to_minor_units(amount: Decimal, currency: str) -> int:
    """1234.56 USD -> 123456; 12000 JPY -> 12000 (what Stripe's API expects)."""
    return int((to_amount(amount, currency, allow_negative=True) / minor_unit_exponent(currency)).to_integral_value())


def from_minor_units(value: int, currency: str) -> Decimal:
    return to_amount(Decimal(value) * minor_unit_exponent(currency), currency, allow_negative=True)


def format_money(amount: Decimal, currency: str, locale: str = "en") -> str:
    """'$1,234.56' in en, '1.234,56 €' in it, '￥12,000' in ja."""
    return format_currency(amount, currency, locale=locale.replace("-", "_"))
