"""API representations: timestamps in ISO 8601 UTC, money as decimal strings with their currency."""

from __future__ import annotations

import datetime
from decimal import Decimal

from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.models import Invoice, PaymentAttempt
from billing.money import to_amount
from customers.models import Customer, PaymentMethod
from dunning.models import Campaign, CampaignStep, CaseEvent, DunningCase
from integrations.models import InboundEvent
from notifications.models import Notification


class UTCDateTimeField(serializers.DateTimeField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default_timezone", datetime.UTC)
        super().__init__(*args, **kwargs)

    def to_representation(self, value):
        return utc_iso(value)


def utc_iso(value: datetime.datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as every datetime in the API."""
    if value is None:
        return None
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


@extend_schema_field({"type": "string", "format": "decimal", "pattern": r"^\d+(\.\d+)?$", "example": "49.00"})
class MoneyField(serializers.Field):
    """An amount rounded to its currency's minor unit, as a string ("49.00", "1200" for JPY)."""

    def __init__(self, *, currency_field: str = "currency", **kwargs):
        self.currency_field = currency_field
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def get_attribute(self, instance):
        return instance

    def to_representation(self, instance):
        value = getattr(instance, self.source_attrs[-1] if self.source_attrs else self.field_name)
        return str(to_amount(value, getattr(instance, self.currency_field)))


class Base(serializers.ModelSerializer):
    serializer_field_mapping = {**serializers.ModelSerializer.serializer_field_mapping,
                                models.DateTimeField: UTCDateTimeField}


class CustomerSerializer(Base):
    mrr = MoneyField()

    class Meta:
        model = Customer
        fields = ("id", "external_id", "name", "email", "phone", "locale", "timezone", "country", "currency",
                  "segment", "is_business", "mrr", "status", "suspended_at", "created_at", "updated_at")
        read_only_fields = ("status", "suspended_at")


class CustomerWriteSerializer(Base):
    mrr = serializers.DecimalField(max_digits=14, decimal_places=4, min_value=Decimal("0"), required=False)

    class Meta:
        model = Customer
        fields = ("external_id", "name", "email", "phone", "locale", "timezone", "country", "currency",
                  "segment", "is_business", "mrr")


class PaymentMethodSerializer(Base):
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)

    class Meta:
        model = PaymentMethod
        fields = ("id", "customer", "gateway", "kind", "brand", "last4", "exp_month", "exp_year", "is_default",
                  "detached_at", "created_at", "updated_at")


class InvoiceSerializer(Base):
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    amount_due = MoneyField()
    amount_paid = MoneyField()
    amount_remaining = MoneyField()

    class Meta:
        model = Invoice
        fields = ("id", "external_id", "number", "customer", "currency", "amount_due", "amount_paid",
                  "amount_remaining", "issued_at", "due_date", "status", "paid_at", "auto_collect",
                  "created_at", "updated_at")


class InvoiceWriteSerializer(serializers.Serializer):
    external_id = serializers.CharField(max_length=100)
    number = serializers.CharField(max_length=100, required=False, allow_blank=True)
    customer = serializers.CharField(max_length=100, help_text="The customer's external id.")
    currency = serializers.CharField(min_length=3, max_length=3)
    amount_due = serializers.DecimalField(max_digits=14, decimal_places=4, min_value=Decimal("0"),
                                          max_value=Decimal("9999999999"))
    amount_paid = serializers.DecimalField(max_digits=14, decimal_places=4, min_value=Decimal("0"),
                                           max_value=Decimal("9999999999"), required=False, default=Decimal("0"))
    issued_at = serializers.DateField()
    due_date = serializers.DateField()


class AttemptSerializer(Base):
    amount = MoneyField()

    class Meta:
        model = PaymentAttempt
        fields = ("id", "amount", "currency", "outcome", "source", "decline_code", "advice_code", "message",
                  "created_at", "completed_at")


class CaseEventSerializer(Base):
    class Meta:
        model = CaseEvent
        fields = ("id", "at", "kind", "message", "actor_label", "payload")


class CaseSerializer(Base):
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    invoice = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    campaign = serializers.PrimaryKeyRelatedField(read_only=True)
    amount_remaining = serializers.SerializerMethodField()
    currency = serializers.CharField(source="invoice.currency", read_only=True)

    class Meta:
        model = DunningCase
        fields = ("id", "customer", "invoice", "campaign", "status", "amount_remaining", "currency", "failed_at",
                  "decline_code", "current_step", "next_step", "next_action_at", "paused_at", "closed_at",
                  "created_at", "updated_at")

    @extend_schema_field({"type": "string", "format": "decimal", "example": "49.00"})
    def get_amount_remaining(self, obj: DunningCase) -> str:
        return str(to_amount(obj.invoice.amount_remaining, obj.invoice.currency))


class CaseDetailSerializer(CaseSerializer):
    timeline = CaseEventSerializer(many=True, source="events", read_only=True)
    attempts = serializers.SerializerMethodField()

    class Meta(CaseSerializer.Meta):
        fields = (*CaseSerializer.Meta.fields, "timeline", "attempts")

    @extend_schema_field(AttemptSerializer(many=True))
    def get_attempts(self, obj: DunningCase):
        rows = PaymentAttempt.objects.filter(invoice_id=obj.invoice_id).order_by("created_at", "id")
        return AttemptSerializer(rows, many=True).data


class CaseActionSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


class StepSerializer(Base):
    class Meta:
        model = CampaignStep
        fields = ("id", "position", "offset_days", "offset_hours", "action", "template_code", "channels")


class CampaignSerializer(Base):
    steps = StepSerializer(many=True, read_only=True)

    class Meta:
        model = Campaign
        fields = ("id", "name", "active", "priority", "currency", "min_amount", "max_amount", "segment", "steps",
                  "created_at", "updated_at")


class NotificationSerializer(Base):
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)

    class Meta:
        model = Notification
        fields = ("id", "customer", "template_code", "locale", "subject", "body_text", "status", "reference",
                  "sent_at", "read_at", "dismissed_at", "created_at")


class PaymentMethodInput(serializers.Serializer):
    token = serializers.CharField(max_length=255, help_text="The gateway's reference (never a card number).")
    gateway = serializers.CharField(max_length=32, required=False, default="sandbox")
    kind = serializers.ChoiceField(choices=PaymentMethod.Kind.choices, required=False)
    brand = serializers.CharField(max_length=32, required=False, allow_blank=True)
    last4 = serializers.RegexField(r"^\d{4}$", required=False, allow_blank=True)
    exp_month = serializers.IntegerField(min_value=1, max_value=12, required=False)
    exp_year = serializers.IntegerField(min_value=2000, max_value=2200, required=False)


@extend_schema_field(PaymentMethodInput)
class PaymentMethodField(serializers.Field):
    """The nested payment method, validated by PaymentMethodInput when an event carries one. (A nested
    serializer field is deep-copied on every request, a visible cost on the busiest endpoint.)"""

    def to_internal_value(self, data):
        nested = PaymentMethodInput(data=data)
        if not nested.is_valid():
            raise serializers.ValidationError(nested.errors)
        return dict(nested.validated_data)

    def to_representation(self, value):
        return value


class PaymentEventInput(serializers.Serializer):
    id = serializers.CharField(max_length=255, help_text="Your event id; a repeated id is applied once.")
    type = serializers.ChoiceField(choices=InboundEvent.Kind.choices)
    invoice = serializers.CharField(max_length=100, required=False,
                                    help_text="Invoice external id (payment_failed, payment_succeeded, refunded).")
    customer = serializers.CharField(max_length=100, required=False,
                                     help_text="Customer external id (payment_method_updated).")
    amount = serializers.DecimalField(max_digits=14, decimal_places=4, min_value=Decimal("0"),
                                      max_value=Decimal("9999999999"), required=False,
                                      help_text="Defaults to the remaining balance for payment_succeeded.")
    decline_code = serializers.CharField(max_length=64, required=False, allow_blank=True)
    message = serializers.CharField(max_length=255, required=False, allow_blank=True)
    reference = serializers.CharField(max_length=255, required=False, allow_blank=True)
    occurred_at = serializers.DateTimeField(required=False, default_timezone=datetime.UTC)
    payment_method = PaymentMethodField(required=False)

    def validate(self, attrs):
        kind = attrs["type"]
        if kind == InboundEvent.Kind.PAYMENT_METHOD_UPDATED:
            missing = [f for f in ("customer", "payment_method") if not attrs.get(f)]
        else:
            missing = [] if attrs.get("invoice") else ["invoice"]
        if kind == InboundEvent.Kind.REFUNDED and attrs.get("amount") is None:
            missing.append("amount")
        if missing:
            raise serializers.ValidationError({f: [f"Required for {kind} events."] for f in missing})
        return attrs


class PaymentEventSerializer(serializers.Serializer):
    # Declared field by field (not a ModelSerializer): every event POST renders one, and building the
    # fields from the model on each call was a visible share of the request.
    id = serializers.CharField(source="event_id", read_only=True)
    type = serializers.ChoiceField(source="kind", choices=InboundEvent.Kind.choices, read_only=True)
    status = serializers.ChoiceField(choices=InboundEvent.Status.choices, read_only=True,
                                     help_text="pending until a worker applies it (payment_failed), then applied "
                                               "or rejected (see error).")
    received_at = UTCDateTimeField(read_only=True)
    applied_at = UTCDateTimeField(read_only=True, allow_null=True)
    result = serializers.JSONField(read_only=True, help_text="What the event did (case, attempt...), once applied.")
    error = serializers.CharField(read_only=True, help_text="Why the event was rejected (empty otherwise).")
    duplicate = serializers.SerializerMethodField()

    def get_duplicate(self, obj) -> bool:
        return bool(self.context.get("duplicate", False))

    def to_representation(self, event):
        # By hand, with the declared fields above as the contract (tests compare the two): DRF copies
        # every declared field per serializer, and every event POST renders one.
        return {"id": event.event_id, "type": event.kind, "status": event.status,
                "received_at": utc_iso(event.received_at), "applied_at": utc_iso(event.applied_at),
                "result": event.result, "error": event.error, "duplicate": self.get_duplicate(event)}


class ReportSummarySerializer(serializers.Serializer):
    open_cases = serializers.IntegerField()
    cases_by_status = serializers.DictField(child=serializers.IntegerField())
    recovered_amount = serializers.DictField(child=serializers.CharField(),
                                             help_text="Recovered amounts per currency, as decimal strings.")
    open_amount = serializers.DictField(child=serializers.CharField())
    recovery_rate = serializers.FloatField(help_text="Recovered cases / closed cases (0 when none closed).")
    attempts = serializers.IntegerField()
    attempts_succeeded = serializers.IntegerField()
