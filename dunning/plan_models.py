"""Payment plans: a customer's overdue balance split into monthly instalments (logic in dunning.plans)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from billing.money import format_money
from customers.models import TimestampedModel
from customers.validators import validate_currency

MIN_MONTHS = 2
MAX_MONTHS = 6


class PlanLimit(TimestampedModel):
    """Staff-set limits per currency: a request within them is accepted at once, else staff decide."""

    currency = models.CharField(max_length=3, unique=True, validators=[validate_currency])
    min_instalment = models.DecimalField(
        max_digits=14, decimal_places=4, validators=[MinValueValidator(Decimal("0"))],
        help_text=_("The smallest instalment accepted automatically."),
    )
    max_months = models.PositiveSmallIntegerField(
        default=MAX_MONTHS, validators=[MinValueValidator(MIN_MONTHS), MaxValueValidator(MAX_MONTHS)],
        help_text=_("The most monthly instalments accepted automatically (2 to 6)."),
    )

    class Meta:
        ordering = ["currency"]

    def __str__(self) -> str:
        return f"{self.currency}: {self.max_months} months, min {self.min_instalment}"


class PaymentPlan(TimestampedModel):
    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting for approval")
        ACTIVE = "active", _("Active")
        COMPLETED = "completed", _("Completed")
        DEFAULTED = "defaulted", _("Missed an instalment")
        REJECTED = "rejected", _("Rejected")
        # A request still waiting when its invoice was paid: there is nothing left to decide.
        CANCELLED = "cancelled", _("Cancelled")

    OPEN_STATUSES = (Status.PENDING, Status.ACTIVE)

    customer = models.ForeignKey("customers.Customer", on_delete=models.PROTECT, related_name="payment_plans")
    invoices = models.ManyToManyField("billing.Invoice", related_name="payment_plans")
    currency = models.CharField(max_length=3, validators=[validate_currency])
    total = models.DecimalField(max_digits=14, decimal_places=4)
    months = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(MIN_MONTHS), MaxValueValidator(MAX_MONTHS)]
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    auto_approved = models.BooleanField(default=False)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "currency"], condition=models.Q(status__in=["pending", "active"]),
                name="one_open_plan_per_customer_currency",
            ),
        ]

    def __str__(self) -> str:
        return f"Plan #{self.pk}: {format_money(self.total, self.currency)} in {self.months}"

    def clean(self) -> None:
        if self.total is not None and self.total <= 0:
            raise ValidationError({"total": _("A plan needs a balance to split.")})


class Instalment(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        CHARGING = "charging", _("Being charged")
        PAID = "paid", _("Paid")
        MISSED = "missed", _("Missed")
        CANCELLED = "cancelled", _("Cancelled")

    plan = models.ForeignKey(PaymentPlan, on_delete=models.CASCADE, related_name="instalments")
    number = models.PositiveSmallIntegerField()
    due_date = models.DateField()
    amount = models.DecimalField(max_digits=14, decimal_places=4)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED, db_index=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    decline_code = models.CharField(max_length=64, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text=_("When a worker started charging it."))

    class Meta:
        ordering = ["plan", "number"]
        constraints = [models.UniqueConstraint(fields=["plan", "number"], name="instalment_unique_number")]
        indexes = [
            # Scanned by the instalment charger (dunning.plans.charge_due_instalments).
            models.Index(fields=["due_date"], condition=models.Q(status="scheduled"), name="instalment_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.plan} #{self.number} {format_money(self.amount, self.plan.currency)} on {self.due_date}"
