from __future__ import annotations

import uuid

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.translation import get_language_info
from django.utils.translation import gettext_lazy as _

from dunning.plan_models import MAX_MONTHS, MIN_MONTHS


class SecretInput(forms.TextInput):
    """A text box that never writes its value back into the page (card number, CVC)."""

    def format_value(self, value):
        return None


class IdempotentForm(forms.Form):
    """A hidden key made when the form is shown: submitting the same form twice does the work once."""

    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("initial", {}).setdefault("idempotency_key", uuid.uuid4().hex)
        super().__init__(*args, **kwargs)


class CardForm(IdempotentForm):
    card_number = forms.CharField(
        label=_("Card number"), max_length=23, min_length=12,
        widget=SecretInput(attrs={"autocomplete": "cc-number", "inputmode": "numeric"}),
    )
    exp_month = forms.IntegerField(
        label=_("Expiry month (MM)"), min_value=1, max_value=12,
        widget=forms.NumberInput(attrs={"autocomplete": "cc-exp-month", "inputmode": "numeric"}),
    )
    exp_year = forms.IntegerField(
        label=_("Expiry year (YYYY)"), min_value=2000, max_value=2100,
        widget=forms.NumberInput(attrs={"autocomplete": "cc-exp-year", "inputmode": "numeric"}),
    )
    cvc = forms.CharField(
        label=_("Security code (CVC)"), max_length=4, min_length=3,
        widget=SecretInput(attrs={"autocomplete": "cc-csc", "inputmode": "numeric"}),
    )

    def clean_card_number(self):
        digits = "".join(ch for ch in self.cleaned_data["card_number"] if ch.isdigit())
        if not 12 <= len(digits) <= 19:
            raise forms.ValidationError(_("Enter the card number as printed on the card."))
        return digits

    def clean(self):
        data = super().clean()
        month, year = data.get("exp_month"), data.get("exp_year")
        if month and year:
            today = timezone.now().date()
            if (year, month) < (today.year, today.month):
                raise forms.ValidationError(_("This card has expired."))
        return data


class PayForm(IdempotentForm):
    pass


class PlanForm(forms.Form):
    months = forms.TypedChoiceField(
        label=_("Number of monthly instalments"), coerce=int,
        choices=[(n, str(n)) for n in range(MIN_MONTHS, MAX_MONTHS + 1)], initial=3,
    )


class SupportForm(forms.Form):
    message = forms.CharField(
        label=_("Your message"), max_length=2000, min_length=5,
        widget=forms.Textarea(attrs={"rows": 6, "aria-describedby": "id_message-help"}),
        help_text=_("Our team will reply by email, usually within one working day."),
    )


class PreferencesForm(forms.Form):
    # Each language in its own name, so a customer can always find theirs.
    locale = forms.ChoiceField(
        label=_("Language"), choices=[(code, get_language_info(code)["name_local"]) for code, _n in settings.LANGUAGES]
    )
    opt_out_email = forms.BooleanField(label=_("Stop reminder emails"), required=False)
    opt_out_sms = forms.BooleanField(label=_("Stop text messages (SMS)"), required=False)
    opt_out_inapp = forms.BooleanField(label=_("Stop in-app messages"), required=False)


class LinkRequestForm(forms.Form):
    email = forms.EmailField(label=_("Your email address"), max_length=254,
                             widget=forms.EmailInput(attrs={"autocomplete": "email"}))


