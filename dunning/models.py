from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.models import Invoice, PaymentAttempt
from customers.models import BillingContact, Customer, PaymentMethod, TimestampedModel
from customers.validators import validate_currency
from dunning.errors import DunningExcluded, NoMatchingCampaign
from notifications.models import Channel

# Campaign.payment_method_kinds: the customer's default payment method type, or "none" without one.
METHOD_KINDS = {*PaymentMethod.Kind.values, "none"}


def case_key(case_id: int, *parts) -> str:
    """``case:<id>``, or ``case:<id>:<part>:...``: how everything a case causes names it (message
    references, dedupe and idempotency keys, outbound event ids). ``case_id_in`` reads it back."""
    return ":".join(("case", str(case_id), *(str(p) for p in parts)))


def case_id_in(reference: str) -> int | None:
    """The case a reference names (``case:<id>``), or None."""
    prefix, _sep, rest = reference.partition(":")
    return int(rest) if prefix == "case" and rest.isdigit() else None


def _split_codes(value: str, *, upper: bool = True) -> list[str]:
    parts = [p.strip() for p in (value or "").split(",") if p.strip()]
    return [p.upper() if upper else p.lower() for p in parts]


class CampaignQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True)

    def targeting(self, invoices: list[Invoice]) -> Targeting:
        """What choosing a campaign for these invoices needs, loaded once (see Targeting)."""
        return Targeting(invoices)


class Campaign(TimestampedModel):
    """An escalation campaign: ordered steps run from the moment a payment failed."""

    name = models.CharField(max_length=120, unique=True)
    active = models.BooleanField(default=False)
    priority = models.PositiveIntegerField(
        default=100, help_text=_("Lower numbers are tried first when several campaigns match an invoice.")
    )
    currency = models.CharField(
        max_length=3, blank=True, validators=[validate_currency], help_text=_("Blank: any currency.")
    )
    min_amount = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))]
    )
    max_amount = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))]
    )
    segment = models.CharField(max_length=64, blank=True, help_text=_("Blank: any segment or plan."))
    # Targeting rules (Campaign.matches): blank/empty means "any".
    countries = models.CharField(
        max_length=200, blank=True, help_text=_("Customer countries, comma-separated ISO codes (US, IT). Blank: any.")
    )
    min_tenure_days = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("Only customers who have been customers at least this many days.")
    )
    max_tenure_days = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("Only customers who have been customers at most this many days.")
    )
    payment_method_kinds = models.CharField(
        max_length=100, blank=True,
        help_text=_("Default payment method types, comma-separated: card, sepa_debit, ach_debit, other, "
                    "none (no method on file). Blank: any."),
    )

    objects = CampaignQuerySet.as_manager()

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.min_amount is not None and self.max_amount is not None and self.min_amount > self.max_amount:
            raise ValidationError({"max_amount": _("The maximum amount must not be below the minimum.")})
        if (self.min_tenure_days is not None and self.max_tenure_days is not None
                and self.min_tenure_days > self.max_tenure_days):
            raise ValidationError({"max_tenure_days": _("The maximum tenure must not be below the minimum.")})
        bad = [k for k in _split_codes(self.payment_method_kinds, upper=False) if k not in METHOD_KINDS]
        if bad:
            raise ValidationError({"payment_method_kinds": _("Unknown payment method type: %s.") % ", ".join(bad)})

    def matches(self, invoice: Invoice, *, method_kind: str | None = None) -> bool:
        """Whether this campaign's rules accept the invoice. ``method_kind`` is the customer's default
        payment method type ("none" without one); it is looked up only if a rule needs it."""
        remaining = invoice.amount_remaining
        if self.currency and self.currency != invoice.currency:
            return False
        if self.min_amount is not None and remaining < self.min_amount:
            return False
        if self.max_amount is not None and remaining > self.max_amount:
            return False
        if self.segment and self.segment != invoice.customer.segment:
            return False
        return self.matches_customer(invoice, method_kind)

    def matches_customer(self, invoice: Invoice, method_kind: str | None = None) -> bool:
        """The rules beyond currency/amount/segment: country, tenure and payment method type."""
        customer = invoice.customer
        if self.countries and customer.country.upper() not in _split_codes(self.countries):
            return False
        if self.min_tenure_days is not None or self.max_tenure_days is not None:
            days = max((timezone.now() - customer.created_at).days, 0)
            if self.min_tenure_days is not None and days < self.min_tenure_days:
                return False
            if self.max_tenure_days is not None and days > self.max_tenure_days:
                return False
        if self.payment_method_kinds:
            kind = method_kind if method_kind is not None else _default_method_kind(customer.pk)
            if kind not in _split_codes(self.payment_method_kinds, upper=False):
                return False
        return True

    def assign_variant(self, invoice: Invoice,
                       variants: list[CampaignVariant] | None = None) -> tuple[Campaign, CampaignVariant | None]:
        """The campaign whose steps the invoice's case runs, and its A/B variant (None without an
        experiment). ``variants``: this campaign's, when the caller loaded them
        (CampaignVariant.objects.by_experiment)."""
        if variants is None:
            variants = CampaignVariant.objects.by_experiment([self.pk]).get(self.pk, [])
        if not variants:
            return self, None
        point = CampaignVariant.bucket(self.pk, invoice.pk, sum(v.weight for v in variants))
        for variant in variants:
            if point < variant.weight:
                return variant.steps_from, variant
            point -= variant.weight
        return variants[-1].steps_from, variants[-1]  # unreachable: the weights add up to the total


def _default_method_kind(customer_id: int) -> str:
    kind = (
        PaymentMethod.objects.filter(customer_id=customer_id, is_default=True, detached_at__isnull=True)
        .values_list("kind", flat=True)
        .first()
    )
    return kind or "none"


class Targeting:
    """Which campaign a failed invoice gets, for a set of invoices loaded with a fixed number of
    queries (pins, active campaigns, and default payment method types only if a campaign has a rule
    on them), so that opening many cases at once costs the same few queries as opening one.

    Order of precedence: an excluded invoice or customer gets none; a pin (invoice first, then
    customer) wins over the rules; otherwise the first active campaign by priority whose rules match.
    """

    def __init__(self, invoices: list[Invoice]):
        invoice_ids = {i.pk for i in invoices}
        customer_ids = {i.customer_id for i in invoices}
        self.invoice_pins: dict[int, Campaign] = {}
        self.customer_pins: dict[int, Campaign] = {}
        pins = CampaignPin.objects.filter(Q(invoice_id__in=invoice_ids) | Q(customer_id__in=customer_ids))
        for pin in pins.select_related("campaign"):
            if pin.invoice_id is not None:
                self.invoice_pins[pin.invoice_id] = pin.campaign
            else:
                self.customer_pins[pin.customer_id] = pin.campaign
        self.campaigns = list(Campaign.objects.active().order_by("priority", "id"))
        self.method_kinds: dict[int, str] | None = None
        if any(c.payment_method_kinds for c in self.campaigns):
            self.method_kinds = {}
            methods = (PaymentMethod.objects.filter(customer_id__in=customer_ids, is_default=True,
                                                    detached_at__isnull=True)
                       .values_list("customer_id", "kind"))
            for customer_id, kind in methods:  # at most one usable default per customer (a constraint)
                self.method_kinds[customer_id] = kind or "none"

    def select(self, invoice: Invoice) -> Campaign:
        customer = invoice.customer
        if invoice.exclude_from_dunning or customer.exclude_from_dunning:
            who = "invoice" if invoice.exclude_from_dunning else "customer"
            raise DunningExcluded(f"Invoice {invoice.number}: the {who} is excluded from dunning")
        pinned = self.invoice_pins.get(invoice.pk) or self.customer_pins.get(customer.pk)
        if pinned is not None:
            return pinned
        method_kind = None if self.method_kinds is None else self.method_kinds.get(customer.pk, "none")
        for campaign in self.campaigns:
            if campaign.matches(invoice, method_kind=method_kind):
                return campaign
        raise NoMatchingCampaign(
            f"No active campaign matches invoice {invoice.number} ({invoice.currency} {invoice.amount_remaining})"
        )


class CampaignStepQuerySet(models.QuerySet):
    def by_campaign(self, campaign_ids: Iterable[int]) -> dict[int, list[CampaignStep]]:
        """The steps of these campaigns in order, by campaign id (one query)."""
        steps: dict[int, list[CampaignStep]] = {}
        for step in self.filter(campaign_id__in=set(campaign_ids)).order_by("campaign_id", "position"):
            steps.setdefault(step.campaign_id, []).append(step)
        return steps


class CampaignStep(models.Model):
    class Action(models.TextChoices):
        RETRY = "retry", _("Retry the payment")
        EMAIL = "email", _("Send a reminder")
        FINAL_NOTICE = "final_notice", _("Send the final notice")
        SUSPEND = "suspend", _("Suspend service")
        MARK_UNCOLLECTIBLE = "mark_uncollectible", _("Mark the invoice uncollectible")
        CALL = "call", _("Call the customer (work queue task)")

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(help_text=_("Steps run in this order."))
    offset_days = models.PositiveSmallIntegerField(default=0, help_text=_("Days after the failed payment."))
    offset_hours = models.PositiveSmallIntegerField(default=0)
    action = models.CharField(max_length=32, choices=Action.choices)
    template_code = models.SlugField(
        max_length=64, blank=True, help_text=_("Message template for reminder and notice steps, e.g. reminder.")
    )
    channels = models.JSONField(
        default=list, blank=True, help_text=_('Channels for messages, e.g. ["email"]. Empty means email.')
    )
    # Who is addressed (customers.BillingContact); see notifications.recipients.
    audience = models.CharField(
        max_length=16, choices=[("primary", _("Primary contact")), ("all", _("All billing contacts"))],
        default="primary", help_text=_("Without billing contacts, the customer's own address is used."),
    )
    escalate_to = models.CharField(
        max_length=16, blank=True, choices=BillingContact.Role.choices,
        help_text=_("From this step on, also address the contacts with this role (e.g. the account owner)."),
    )

    objects = CampaignStepQuerySet.as_manager()

    class Meta:
        ordering = ["campaign", "position"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "position"], name="campaign_step_unique_position"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign.name} #{self.position}: {self.get_action_display()} (day {self.offset_days})"

    @property
    def offset(self) -> timedelta:
        return timedelta(days=self.offset_days, hours=self.offset_hours)

    @property
    def sends_message(self) -> bool:
        return self.action in (self.Action.EMAIL, self.Action.FINAL_NOTICE)

    @property
    def message_channels(self) -> list[str]:
        return list(self.channels) or [Channel.EMAIL]

    def clean(self) -> None:
        if self.sends_message and not self.template_code:
            raise ValidationError({"template_code": _("Reminder and notice steps need a message template.")})
        valid = set(Channel.values)
        bad = [c for c in (self.channels or []) if c not in valid]
        if bad or not isinstance(self.channels, list):
            raise ValidationError({"channels": _("Use a list of channels from: %s.") % ", ".join(sorted(valid))})


class DunningCaseQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=DunningCase.OPEN_STATUSES)

    def due(self, now=None):
        return self.filter(status=DunningCase.Status.ACTIVE, next_action_at__lte=now or timezone.now())


class DunningCase(TimestampedModel):
    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        PAUSED = "paused", _("Paused")
        RECOVERED = "recovered", _("Recovered")
        EXHAUSTED = "exhausted", _("Exhausted")
        CANCELLED = "cancelled", _("Cancelled")

    OPEN_STATUSES = (Status.ACTIVE, Status.PAUSED)

    class RetryState(models.TextChoices):
        SCHEDULED = "scheduled", _("Retries as scheduled")
        DEFERRED = "deferred", _("Retry deferred (limit, advice code or timing policy)")
        NEEDS_PAYMENT_METHOD = "needs_payment_method", _("Needs a new payment method")

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="dunning_cases")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="dunning_cases")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="cases")
    # status is covered by case_status_failed_idx (status, -failed_at).
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    failed_at = models.DateTimeField(help_text=_("When the payment failed: step offsets count from here."))
    decline_code = models.CharField(max_length=64, blank=True)
    current_step = models.ForeignKey(
        CampaignStep, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text=_("The last step that ran."),
    )
    next_step = models.ForeignKey(CampaignStep, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
                                  db_index=False)
    next_action_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # Smart retries (dunning.retries): whether retry steps charge, wait, or wait for a new method.
    retry_state = models.CharField(max_length=24, choices=RetryState.choices, default=RetryState.SCHEDULED)
    quick_retries = models.PositiveSmallIntegerField(
        default=0, help_text=_("Retries repeated soon after a processing error.")
    )
    # Copies of invoice facts for the dashboard's join-free sums (set by dunning.cases and dunning.payments).
    currency = models.CharField(max_length=3, blank=True, help_text=_("The invoice's currency."))
    recovered_amount = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True,
        help_text=_("What the invoice had been paid when the case recovered."),
    )
    variant = models.ForeignKey(
        "CampaignVariant", on_delete=models.PROTECT, null=True, blank=True, related_name="cases",
        help_text=_("The A/B test variant this case was assigned to (kept for the case's life)."),
    )

    objects = DunningCaseQuerySet.as_manager()

    class Meta:
        ordering = ["-failed_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice"],
                condition=models.Q(status__in=["active", "paused"]),
                name="one_open_case_per_invoice",
            ),
        ]
        indexes = [
            # Scanned every minute by the engine (dunning.engine.run_due_steps).
            models.Index(
                fields=["next_action_at"], condition=models.Q(status="active"), name="case_due_idx"
            ),
            models.Index(fields=["status", "-failed_at"], name="case_status_failed_idx"),
            # The changelist's default ordering, and the reports' date range on failed_at.
            models.Index(fields=["-failed_at", "-id"], name="case_failed_idx"),
            # The dashboard's recovered revenue over time (index-only) and "closed this week" counts.
            models.Index(fields=["status", "closed_at", "currency", "recovered_amount"],
                         name="case_status_closed_idx"),
        ]

    def __str__(self) -> str:
        return f"Case #{self.pk} · {self.invoice}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class CaseEvent(models.Model):
    """The append-only timeline of a case: every step, payment, message and staff action.

    It is the audit trail, so rows are never updated or deleted through the ORM.
    """

    # Every engine step writes a row here, so only indexes a query needs: the timeline (case, at) and
    # reports by kind.
    case = models.ForeignKey(DunningCase, on_delete=models.CASCADE, related_name="events", db_index=False)
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=64, help_text=_("Namespaced code, e.g. step.retry."))
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    actor_label = models.CharField(max_length=100, default="system")
    step = models.ForeignKey(CampaignStep, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                             db_index=False)
    attempt = models.ForeignKey(PaymentAttempt, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                db_index=False)
    message = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["case", "at"], name="caseevent_timeline_idx"),
            models.Index(fields=["kind"], name="caseevent_kind_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.kind}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("Case events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Case events are append-only")


class WorkItem(TimestampedModel):
    """The staff work queue: something a person must do (call, answer, approve, fix an address)."""

    class Kind(models.TextChoices):
        CALL = "call", _("Call the customer")
        SUPPORT = "support", _("Support request")
        PLAN_REQUEST = "plan_request", _("Payment plan request")
        NEEDS_PAYMENT_METHOD = "needs_payment_method", _("Needs a payment method")
        BOUNCED = "bounced", _("Address bounced")
        LATE_CHARGE = "late_charge", _("Charged after the invoice closed")
        OTHER = "other", _("Other")

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        SNOOZED = "snoozed", _("Snoozed")
        DONE = "done", _("Done")

    kind = models.CharField(max_length=32, choices=Kind.choices, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="work_items")
    case = models.ForeignKey(DunningCase, on_delete=models.SET_NULL, null=True, blank=True, related_name="work_items")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="work_items"
    )
    snoozed_until = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    dedupe_key = models.CharField(max_length=200, unique=True, null=True, blank=True)

    class Meta:
        ordering = ["status", "created_at"]
        indexes = [
            models.Index(fields=["status", "kind", "created_at"], name="workitem_queue_idx"),
            # The work queue's default ordering without a kind filter.
            models.Index(fields=["status", "created_at"], name="workitem_status_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.title}"


class RetryPolicy(models.Model):
    """When a campaign's retry steps may charge (dunning.retries). A campaign without one uses the defaults."""

    campaign = models.OneToOneField(Campaign, on_delete=models.CASCADE, related_name="retry_policy")
    local_hour = models.PositiveSmallIntegerField(
        null=True, blank=True, default=10, validators=[MaxValueValidator(23)],
        help_text=_("Charge during this hour in the customer's time zone (blank: any hour)."),
    )
    use_paydays = models.BooleanField(
        default=False, help_text=_("Move retries after a soft decline to the next payday.")
    )
    paydays = models.JSONField(
        default=list, blank=True, help_text=_("Days of the month, e.g. [1, 15]. Empty means 1 and 15.")
    )
    min_gap_hours = models.PositiveIntegerField(
        default=20, help_text=_("Never two charges of the same invoice closer than this.")
    )
    quick_retry_minutes = models.PositiveIntegerField(
        default=60, help_text=_("After a processing error, retry this soon (0: wait for the next retry step).")
    )
    max_quick_retries = models.PositiveSmallIntegerField(default=2)

    class Meta:
        verbose_name_plural = _("retry policies")

    def __str__(self) -> str:
        return f"Retry policy of {self.campaign}"

    def clean(self) -> None:
        if not isinstance(self.paydays, list) or any(
            not isinstance(d, int) or not 1 <= d <= 31 for d in self.paydays
        ):
            raise ValidationError({"paydays": _("Use a list of days of the month between 1 and 31.")})


class WorkItemComment(models.Model):
    """A note by staff on a work item; also copied to the case timeline (dunning.workqueue)."""

    item = models.ForeignKey(WorkItem, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.author or 'system'}: {self.body[:40]}"


class CampaignVariantQuerySet(models.QuerySet):
    def by_experiment(self, campaign_ids: Iterable[int]) -> dict[int, list[CampaignVariant]]:
        """The A/B variants of these campaigns (one query), in the order Campaign.assign_variant walks them."""
        variants: dict[int, list[CampaignVariant]] = {}
        for variant in self.filter(experiment_id__in=set(campaign_ids)).select_related("steps_from").order_by("id"):
            variants.setdefault(variant.experiment_id, []).append(variant)
        return variants


class CampaignVariant(models.Model):
    """One arm of an A/B test on a campaign.

    The experiment is the campaign the targeting rules select; each variant runs the steps of the
    campaign it points at (the control points at the experiment's own campaign, a challenger at an
    inactive copy with different steps). A case is assigned by a hash of its invoice id, so the
    same invoice always lands in the same arm, and keeps the arm for life (DunningCase.variant).
    """

    experiment = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=60)
    weight = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    steps_from = models.ForeignKey(
        Campaign, on_delete=models.PROTECT, related_name="+",
        help_text=_("The campaign whose steps this variant runs (the experiment itself for the control)."),
    )
    is_control = models.BooleanField(default=False)

    objects = CampaignVariantQuerySet.as_manager()

    class Meta:
        ordering = ["experiment", "-is_control", "id"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "name"], name="variant_unique_name"),
            models.UniqueConstraint(
                fields=["experiment"], condition=models.Q(is_control=True), name="variant_one_control"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.name} / {self.name}"

    @staticmethod
    def bucket(campaign_id: int, invoice_id: int, total_weight: int) -> int:
        """A stable number in [0, total_weight) for this invoice in this experiment."""
        digest = hashlib.sha256(f"ab:{campaign_id}:{invoice_id}".encode()).hexdigest()
        return int(digest[:12], 16) % total_weight

    def clean(self) -> None:
        if not self.steps_from_id:
            return
        if not self.steps_from.steps.exists():
            raise ValidationError({"steps_from": _("This campaign has no steps.")})
        if self.steps_from_id != self.experiment_id and self.steps_from.variants.exists():
            raise ValidationError({"steps_from": _("That campaign runs its own A/B test; pick a plain campaign.")})


class CampaignPin(models.Model):
    """Pin a customer or one invoice to a campaign, overriding the targeting rules."""

    customer = models.OneToOneField(
        Customer, on_delete=models.CASCADE, null=True, blank=True, related_name="campaign_pin"
    )
    invoice = models.OneToOneField(
        Invoice, on_delete=models.CASCADE, null=True, blank=True, related_name="campaign_pin"
    )
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="pins")
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(customer__isnull=True, invoice__isnull=False)
                | models.Q(customer__isnull=False, invoice__isnull=True),
                name="pin_customer_xor_invoice",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invoice or self.customer} → {self.campaign}"
from dunning.fee_models import FeePolicy  # noqa: E402,F401
from dunning.plan_models import Instalment, PaymentPlan, PlanLimit  # noqa: E402,F401
