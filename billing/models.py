from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.money import format_money, to_amount
from customers.models import Customer, PaymentMethod, TimestampedModel
from customers.validators import validate_currency

MONEY = {"max_digits": 14, "decimal_places": 4, "validators": [MinValueValidator(Decimal("0"))]}


class InvoiceQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status=Invoice.Status.OPEN)

    def overdue(self, today=None):
        today = today or timezone.now().date()
        return self.open().filter(due_date__lt=today)


class Invoice(TimestampedModel):
    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        PAID = "paid", _("Paid")
        VOID = "void", _("Void")
        UNCOLLECTIBLE = "uncollectible", _("Uncollectible")

    external_id = models.CharField(max_length=100, unique=True)
    number = models.CharField(max_length=100, db_index=True)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    currency = models.CharField(max_length=3, validators=[validate_currency])
    amount_due = models.DecimalField(**MONEY, help_text=_("The invoice total."))
    amount_paid = models.DecimalField(**MONEY, default=Decimal("0"))
    issued_at = models.DateField()
    due_date = models.DateField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    auto_collect = models.BooleanField(
        default=True, help_text=_("Charged automatically to the saved payment method (off: sent for manual payment).")
    )
    exclude_from_dunning = models.BooleanField(
        default=False, help_text=_("Never open a dunning case for this invoice.")
    )
    # The merchant's billing system when the invoice lives there (Stripe today); blank for invoices
    # that came by CSV or the REST API and are charged through our own gateways.
    billing_system = models.CharField(
        max_length=32, blank=True, default="", help_text=_("The billing system that owns this invoice, if any.")
    )
    remote_status = models.CharField(
        max_length=32, blank=True, default="", help_text=_("The invoice's status in its billing system.")
    )
    remote_updated_at = models.DateTimeField(
        null=True, blank=True, help_text=_("When the billing system's state was last read (orders its events).")
    )
    remote_next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text=_("The billing system's own next automatic payment attempt; we never retry on top of it."),
    )

    objects = InvoiceQuerySet.as_manager()

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount_due__gte=0), name="invoice_amount_due_not_negative"),
            models.CheckConstraint(condition=models.Q(amount_paid__gte=0), name="invoice_amount_paid_not_negative"),
        ]
        indexes = [
            # The admin changelist's default ordering and its currency filter (reports group by it too).
            models.Index(fields=["-issued_at", "-id"], name="invoice_issued_idx"),
            models.Index(fields=["currency", "status"], name="invoice_currency_status_idx"),
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def amount_remaining(self) -> Decimal:
        return max(self.amount_due - self.amount_paid, Decimal("0"))

    def clean(self) -> None:
        errors = {}
        if self.currency:
            try:
                self.amount_due = to_amount(self.amount_due, self.currency)
                self.amount_paid = to_amount(self.amount_paid or 0, self.currency)
            except ValidationError as exc:
                errors["amount_due"] = exc.messages
        if self.issued_at and self.due_date and self.due_date < self.issued_at:
            errors["due_date"] = [_("The due date cannot be before the issue date.")]
        if errors:
            raise ValidationError(errors)


class PaymentAttemptQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(outcome=PaymentAttempt.Outcome.PENDING)

    def unsent(self):
        """Pending and never sent to the gateway: safe to cancel (nothing can have been charged)."""
        return self.pending().filter(tries=0)


class PaymentAttempt(TimestampedModel):
    """One charge of an invoice through the gateway, keyed by an idempotency key.

    The row is written (pending) before the gateway is called; a worker that crashes mid-call leaves
    it pending and another worker calls the gateway again with the same key, which returns the first
    outcome instead of charging twice.

    ``tries`` counts the claims made for the gateway (billing.attempts.start_attempt): while it is 0
    nothing has been sent, and closing the invoice cancels the attempt; once it is 1 or more the
    gateway may have charged, so the attempt is resolved with the same key, never cancelled.
    """

    class Outcome(models.TextChoices):
        PENDING = "pending", _("Pending")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        # Never sent: the invoice closed (paid, written off, voided) or its case was cancelled first.
        CANCELLED = "cancelled", _("Cancelled")

    class Source(models.TextChoices):
        RETRY = "retry", _("Scheduled retry")
        MANUAL = "manual", _("Retry by staff")
        PORTAL = "portal", _("Customer portal")
        EXTERNAL = "external", _("Reported by the billing system")

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="attempts")
    payment_method = models.ForeignKey(
        PaymentMethod, on_delete=models.SET_NULL, null=True, blank=True, related_name="attempts"
    )
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, validators=[validate_currency])
    # Indexes in Meta (no unused LIKE twins on PostgreSQL): retries insert a row per attempt.
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.RETRY)
    decline_code = models.CharField(max_length=64, blank=True)
    advice_code = models.CharField(max_length=8, blank=True, help_text=_("Mastercard merchant advice code."))
    network_code = models.CharField(max_length=8, blank=True, help_text=_("Raw network response code."))
    decline_class = models.CharField(
        max_length=20, blank=True, help_text=_("How the decline was classified (billing.declines).")
    )
    message = models.CharField(max_length=255, blank=True)
    gateway = models.CharField(max_length=32, blank=True)
    gateway_reference = models.CharField(max_length=255, blank=True)
    idempotency_key = models.CharField(max_length=255)
    # Processing lease: a pending attempt is (re)sent to the gateway by whichever worker claims it
    # once lease_until has passed.
    lease_until = models.DateTimeField(default=timezone.now)
    tries = models.PositiveSmallIntegerField(default=0, help_text=_("Calls made to the gateway with this key."))
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = PaymentAttemptQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Scanned by the attempt processor (dunning.tasks.process_payment_attempts).
            models.Index(
                fields=["lease_until"], condition=models.Q(outcome="pending"), name="attempt_pending_lease_idx"
            ),
            models.Index(fields=["outcome"], name="attempt_outcome_idx"),
            models.Index(fields=["decline_code"], name="attempt_decline_code_idx"),
            models.Index(fields=["gateway_reference"], name="attempt_gateway_ref_idx"),
            # Network retry limits per card (billing.limits.usage_for).
            models.Index(fields=["payment_method", "created_at"], name="attempt_method_created_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="attempt_unique_idempotency_key"),
        ]

    def __str__(self) -> str:
        return f"{self.invoice} {format_money(self.amount, self.currency)} {self.outcome}"


class SandboxCharge(models.Model):
    """The sandbox gateway's own ledger, standing in for a real processor's records.

    It remembers every idempotency key so a repeated call returns the first outcome, as Stripe does.
    """

    idempotency_key = models.CharField(max_length=255, unique=True)
    token = models.CharField(max_length=255, db_index=True)
    amount = models.DecimalField(max_digits=14, decimal_places=4)
    currency = models.CharField(max_length=3)
    succeeded = models.BooleanField()
    decline_code = models.CharField(max_length=64, blank=True)
    advice_code = models.CharField(max_length=8, blank=True)
    reference = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.reference} {self.amount} {self.currency}"


class SandboxRefund(models.Model):
    """The sandbox gateway's refunds, one per idempotency key (a repeated call returns the first)."""

    idempotency_key = models.CharField(max_length=255, unique=True)
    charge_reference = models.CharField(max_length=64, db_index=True)
    amount = models.DecimalField(max_digits=14, decimal_places=4)
    currency = models.CharField(max_length=3)
    reference = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.reference} {self.amount} {self.currency}"


class DeclineRule(models.Model):
    """How one decline code is handled: the smart-retry table, kept as data so staff can read and tune it.

    A decline is described by up to three codes (the gateway's decline code, the raw network response
    code and, for Mastercard, a merchant advice code); every matching rule counts and the strictest
    class wins (see billing.declines).
    """

    class Kind(models.TextChoices):
        DECLINE_CODE = "decline_code", _("Gateway decline code (Stripe)")
        NETWORK_CODE = "network_code", _("Network response code")
        ADVICE_CODE = "advice_code", _("Mastercard merchant advice code")

    class Network(models.TextChoices):
        ANY = "", _("Any network")
        VISA = "visa", _("Visa")
        MASTERCARD = "mastercard", _("Mastercard")

    class DeclineClass(models.TextChoices):
        RETRY_SOON = "retry_soon", _("Retry soon (processing problem)")
        SOFT = "soft", _("Retry later (soft decline)")
        NEEDS_NEW_METHOD = "needs_new_method", _("Needs a new payment method")
        HARD = "hard", _("Never retry (hard decline)")

    kind = models.CharField(max_length=16, choices=Kind.choices)
    network = models.CharField(max_length=16, choices=Network.choices, blank=True, default="")
    code = models.CharField(max_length=64)
    decline_class = models.CharField("class", max_length=20, choices=DeclineClass.choices)
    retry_after_hours = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("Wait at least this long before the next retry (e.g. advice codes 24-30).")
    )
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["kind", "network", "code"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "network", "code"], name="decline_rule_unique_code"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.code}{' (' + self.network + ')' if self.network else ''}"


from billing.ledger_models import CustomerCredit, GatewayRefund, InvoiceFee, PaymentAllocation  # noqa: E402,F401
