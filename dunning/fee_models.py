"""Late-fee policy per campaign (opt-in). Imported by dunning.models so Django registers it."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from customers.validators import validate_currency


def _check_money_map(value, field: str) -> None:
    if not isinstance(value, dict):
        raise ValidationError({field: _('Use an object of currency -> amount, e.g. {"EUR": "40.00"}.')})
    for currency, amount in value.items():
        try:
            validate_currency(currency)
            if Decimal(str(amount)) < 0:
                raise ValueError
        except (ValidationError, ValueError, ArithmeticError):
            message = _("%(c)s: %(a)s is not a currency and amount.") % {"c": currency, "a": amount}
            raise ValidationError({field: message})


class FeePolicy(models.Model):
    """Late fees and interest charged while a case of this campaign is overdue. Off by default.

    The EU B2B preset follows the Late Payment Directive 2011/7/EU: statutory interest at the
    reference rate (FEES_EU_REFERENCE_RATE unless set here) plus 8 points, and a fixed EUR 40
    recovery compensation per invoice, for business customers only.
    """

    class Preset(models.TextChoices):
        CUSTOM = "custom", _("Custom")
        EU_B2B = "eu_b2b", _("EU late payment (B2B): reference rate + 8 points, EUR 40")

    campaign = models.OneToOneField("dunning.Campaign", on_delete=models.CASCADE, related_name="fee_policy")
    enabled = models.BooleanField(default=False)
    preset = models.CharField(max_length=16, choices=Preset.choices, default=Preset.CUSTOM)
    business_only = models.BooleanField(
        default=False, help_text=_("Charge business customers only (always true for the EU preset).")
    )
    grace_days = models.PositiveSmallIntegerField(
        default=0, help_text=_("Days after the due date before anything is charged.")
    )
    fixed_fees = models.JSONField(
        default=dict, blank=True, help_text=_('Fixed fee per late invoice by currency, e.g. {"USD": "15.00"}.')
    )
    percentage = models.DecimalField(
        max_digits=6, decimal_places=3, default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text=_("One-off fee in percent of the overdue amount."),
    )
    annual_interest_rate = models.DecimalField(
        max_digits=7, decimal_places=4, default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text=_("Yearly interest in percent, accrued daily on the overdue amount (custom preset)."),
    )
    reference_rate = models.DecimalField(
        max_digits=7, decimal_places=4, null=True, blank=True,
        help_text=_("EU preset: the reference rate in percent; blank uses FEES_EU_REFERENCE_RATE."),
    )
    caps = models.JSONField(
        default=dict, blank=True, help_text=_('Most fees + interest per invoice by currency, e.g. {"USD": "50"}.')
    )

    class Meta:
        verbose_name_plural = _("fee policies")

    def __str__(self) -> str:
        return f"Fees for {self.campaign}: {'on' if self.enabled else 'off'}"

    def clean(self) -> None:
        _check_money_map(self.fixed_fees, "fixed_fees")
        _check_money_map(self.caps, "caps")
