from __future__ import annotations

import calendar
import datetime
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from phonenumber_field.modelfields import PhoneNumberField

from customers.validators import validate_currency, validate_timezone


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Customer(TimestampedModel):
    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        SUSPENDED = "suspended", _("Suspended")
        CHURNED = "churned", _("Churned")

    external_id = models.CharField(
        max_length=100, unique=True, help_text=_("The customer's id in the merchant's billing system.")
    )
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    phone = PhoneNumberField(blank=True, help_text=_("Stored in E.164, e.g. +14155550123."))
    locale = models.CharField(max_length=8, choices=settings.LANGUAGES, default="en")
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    country = models.CharField(
        max_length=2,
        blank=True,
        validators=[RegexValidator(r"^[A-Z]{2}$", _("Use an ISO 3166-1 alpha-2 code such as US or IT."))],
    )
    currency = models.CharField(max_length=3, default="USD", validators=[validate_currency])
    segment = models.CharField(max_length=64, blank=True, db_index=True, help_text=_("Plan or segment."))
    is_business = models.BooleanField(default=False, help_text=_("A business (B2B) customer rather than a consumer."))
    mrr = models.DecimalField(
        _("monthly recurring revenue"), max_digits=14, decimal_places=4, default=0,
        validators=[MinValueValidator(0)],
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    # Communication preferences (set in the portal, by SMS STOP/START, or by staff) and
    # deliverability (a hard bounce or complaint marks the address unusable).
    opt_out_email = models.BooleanField(default=False, help_text=_("No reminder emails (legal notices still go)."))
    opt_out_sms = models.BooleanField(default=False)
    opt_out_inapp = models.BooleanField(default=False)
    email_undeliverable = models.BooleanField(default=False, help_text=_("Hard bounce or complaint received."))
    # Bumping this invalidates every portal link sent so far ("revoke all links").
    portal_token_version = models.PositiveIntegerField(default=0)
    exclude_from_dunning = models.BooleanField(
        default=False, help_text=_("Never open a dunning case for this customer (handled by hand).")
    )
    # Set when personal data was erased (dunning.privacy.erase_customer); nothing is sent afterwards.
    erased_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name", "id"]
        # A portal link is the customer's credential: staff holding this may see and copy working
        # links (minted in their name, dunning/links.py); everyone else sees placeholders.
        permissions = [("send_portal_link", _("Can send portal link"))]
        indexes = [
            # The admin changelist's default ordering, and its currency filter's choices (skip scan).
            models.Index(fields=["name", "id"], name="customer_name_idx"),
            models.Index(fields=["currency"], name="customer_currency_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.external_id})"

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        try:
            return zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return zoneinfo.ZoneInfo("UTC")

    def local_time(self, moment=None):
        return (moment or timezone.now()).astimezone(self.tz)

    @property
    def default_payment_method(self) -> PaymentMethod | None:
        return self.payment_methods.filter(is_default=True, detached_at__isnull=True).first()


class PaymentMethod(TimestampedModel):
    """A saved payment method as the gateway knows it. Never a card number or CVV (PCI DSS)."""

    class Kind(models.TextChoices):
        CARD = "card", _("Card")
        SEPA_DEBIT = "sepa_debit", _("SEPA Direct Debit")
        ACH_DEBIT = "ach_debit", _("ACH Direct Debit")
        OTHER = "other", _("Other")

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="payment_methods")
    gateway = models.CharField(max_length=32, default="sandbox")
    token = models.CharField(max_length=255, help_text=_("The gateway's reference, e.g. pm_... for Stripe."))
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CARD)
    brand = models.CharField(max_length=32, blank=True, help_text=_("visa, mastercard, amex, ..."))
    last4 = models.CharField(max_length=4, blank=True, validators=[RegexValidator(r"^\d{4}$")])
    exp_month = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(12)]
    )
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MinValueValidator(2000)])
    is_default = models.BooleanField(default=False)
    detached_at = models.DateTimeField(null=True, blank=True)
    # Set after a hard decline or one that needs a new method (billing.declines): retries skip this
    # method until the customer updates it (new expiry, new card) or staff clear it.
    charge_blocked_at = models.DateTimeField(
        null=True, blank=True, help_text=_("Not charged again after a hard decline; cleared by an update.")
    )
    charge_blocked_reason = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-is_default", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["gateway", "token"], name="payment_method_unique_token"),
            models.UniqueConstraint(
                fields=["customer"],
                condition=models.Q(is_default=True, detached_at__isnull=True),
                name="one_default_payment_method",
            ),
        ]

    def __str__(self) -> str:
        label = self.brand.title() or self.get_kind_display()
        return f"{label} •••• {self.last4}" if self.last4 else label

    def clean(self) -> None:
        if (self.exp_month is None) != (self.exp_year is None):
            raise ValidationError(_("Give both the expiry month and year, or neither."))

    def expires_on(self):
        """The last day the card can be used, or None."""
        if not (self.exp_month and self.exp_year):
            return None
        last_day = calendar.monthrange(self.exp_year, self.exp_month)[1]
        return datetime.date(self.exp_year, self.exp_month, last_day)


class BillingContact(TimestampedModel):
    """A person to address about a customer's invoices (accounts payable, the account owner...).

    Campaign steps choose who is addressed: the primary contact, every contact, or also the contacts
    of a role from a given step on (escalation). Without contacts, the customer's own address is used.
    """

    class Role(models.TextChoices):
        BILLING = "billing", _("Billing / accounts payable")
        OWNER = "owner", _("Account owner")
        FINANCE = "finance", _("Finance manager")
        TECHNICAL = "technical", _("Technical contact")
        OTHER = "other", _("Other")

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="billing_contacts")
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    phone = PhoneNumberField(blank=True)
    language = models.CharField(
        max_length=8, choices=settings.LANGUAGES, blank=True, help_text=_("Blank: the customer's language.")
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.BILLING, db_index=True)
    is_primary = models.BooleanField(default=False)

    class Meta:
        ordering = ["customer", "-is_primary", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer"], condition=models.Q(is_primary=True), name="one_primary_billing_contact"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.email or self.phone} ({self.get_role_display()})"

    @property
    def locale(self) -> str:
        return self.language or self.customer.locale

    def clean(self) -> None:
        if not (self.email or self.phone):
            raise ValidationError(_("Give an email address or a phone number."))
