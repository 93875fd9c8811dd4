"""Late fees, how each received payment was allocated, and customer credit (overpayments).

Imported by billing.models so Django registers them; kept apart to keep that module small.

Accounting rule (docs/fees.md): an invoice's own figures (amount_due, amount_paid) stay the tax
document; fees are separate line items. A payment for an invoice pays its remaining principal first,
then its open fees (oldest first); anything left becomes customer credit. What the customer owes for
an invoice is ``amount_remaining + open fees`` (billing.fees.amount_owed).
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.money import format_money
from customers.models import Customer, TimestampedModel
from customers.validators import validate_currency

MONEY = {"max_digits": 14, "decimal_places": 4}


class InvoiceFee(TimestampedModel):
    """A late fee or interest charged on an overdue invoice, as its own line item.

    ``key`` is unique (``fee:<invoice>:<kind>``), so the daily job adds each fee once however often
    it runs; the interest row is recomputed in place from the invoice's payment history.
    """

    class Kind(models.TextChoices):
        FIXED = "fixed", _("Late fee")
        PERCENTAGE = "percentage", _("Late fee (percentage)")
        INTEREST = "interest", _("Late payment interest")
        RECOVERY = "recovery", _("Recovery compensation")

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        PAID = "paid", _("Paid")
        WAIVED = "waived", _("Waived")

    invoice = models.ForeignKey("billing.Invoice", on_delete=models.PROTECT, related_name="fees")
    key = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.CharField(max_length=255, blank=True)
    amount = models.DecimalField(**MONEY, default=Decimal("0"))
    amount_paid = models.DecimalField(**MONEY, default=Decimal("0"))
    currency = models.CharField(max_length=3, validators=[validate_currency])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    rate = models.DecimalField(
        max_digits=8, decimal_places=4, null=True, blank=True, help_text=_("Yearly rate in percent (interest).")
    )
    accrued_through = models.DateField(null=True, blank=True, help_text=_("Interest counted up to this day."))
    final = models.BooleanField(default=False, help_text=_("Interest stopped: the invoice is settled."))
    waived_at = models.DateTimeField(null=True, blank=True)
    waived_by = models.CharField(max_length=100, blank=True)
    waive_reason = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["invoice", "created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="invoice_fee_amount_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {format_money(self.amount, self.currency)} ({self.invoice_id})"

    @property
    def amount_open(self) -> Decimal:
        if self.status == self.Status.WAIVED:
            return Decimal("0")
        return max(self.amount - self.amount_paid, Decimal("0"))


class PaymentAllocation(models.Model):
    """One received payment and where it went: the invoice, its fees, customer credit.

    Written by billing.services.apply_payment; the dated rows are the overdue history that interest
    is recomputed from.
    """

    invoice = models.ForeignKey("billing.Invoice", on_delete=models.PROTECT, related_name="allocations")
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, validators=[validate_currency])
    to_invoice = models.DecimalField(**MONEY, default=Decimal("0"))
    to_fees = models.DecimalField(**MONEY, default=Decimal("0"))
    to_credit = models.DecimalField(**MONEY, default=Decimal("0"))

    class Meta:
        ordering = ["received_at", "id"]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} -> {self.invoice_id}"


class CustomerCredit(models.Model):
    """The customer credit ledger: + for an overpayment kept for the customer, - when it is used."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="credits")
    amount = models.DecimalField(max_digits=14, decimal_places=4)
    currency = models.CharField(max_length=3, validators=[validate_currency])
    invoice = models.ForeignKey(
        "billing.Invoice", on_delete=models.PROTECT, null=True, blank=True, related_name="credits"
    )
    allocation = models.OneToOneField(
        PaymentAllocation, on_delete=models.PROTECT, null=True, blank=True, related_name="credit"
    )
    note = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} ({self.customer_id})"


class GatewayRefund(models.Model):
    """Money we give back through the gateway: a charge whose success arrived after the invoice was
    settled by another path (LATE_CHARGE_POLICY=refund, docs/payments.md).

    The row is written (pending) in the transaction that settles the charge, before the gateway is
    called; its idempotency key (``late-refund:<attempt>``, unique) makes the gateway refund once
    however often the call is repeated after a crash or a timeout.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SUCCEEDED = "succeeded", _("Refunded")
        FAILED = "failed", _("Failed")

    attempt = models.ForeignKey("billing.PaymentAttempt", on_delete=models.PROTECT, related_name="refunds")
    invoice = models.ForeignKey("billing.Invoice", on_delete=models.PROTECT, related_name="gateway_refunds")
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, validators=[validate_currency])
    reason = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    idempotency_key = models.CharField(max_length=255, unique=True)
    gateway = models.CharField(max_length=32, blank=True)
    gateway_reference = models.CharField(max_length=255, blank=True)
    message = models.CharField(max_length=255, blank=True)
    tries = models.PositiveSmallIntegerField(default=0)
    lease_until = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Scanned by the refund processor (billing.attempts.process_refunds).
            models.Index(fields=["lease_until"], condition=models.Q(status="pending"), name="refund_pending_lease_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_status_display()} {self.amount} {self.currency} ({self.attempt_id})"
