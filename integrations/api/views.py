"""/api/v1/ views. Thin: they validate input and call services (billing, dunning, integrations.events)."""

from __future__ import annotations

import datetime

from django.db import models
from django.db.models import Count, Q, Sum
from django.http import JsonResponse
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import services as billing
from billing.models import Invoice, PaymentAttempt
from billing.money import to_amount
from customers.models import Customer, PaymentMethod
from dunning import cases, payments
from dunning.models import Campaign, DunningCase
from dunning.privacy import export_customer
from integrations import events
from integrations.api import serializers as s
from integrations.api.idempotency import HEADER, KEY_PATTERN, IdempotentMixin
from integrations.models import InboundEvent
from notifications import inapp
from notifications.models import Channel, Notification

IDEMPOTENCY_PARAM = OpenApiParameter(
    HEADER, {"type": "string", "minLength": 1, "maxLength": 255, "pattern": KEY_PATTERN}, OpenApiParameter.HEADER,
    required=True,
    description="A unique string per request (e.g. a UUID). Retrying with the same key replays the first "
                "response; the same key with a different body is a 409.",
)


class ApiViewSet(IdempotentMixin, viewsets.GenericViewSet):
    # Any id reaches the view, so an unknown or malformed one is a JSON 404 rather than Django's page.
    lookup_value_regex = "[^/]+"


# --- Customers and payment methods ---------------------------------------------------------------

class UTCDateTimeFilter(filters.IsoDateTimeFilter):
    """ISO 8601 filter values normalised to UTC: PostgreSQL refuses offsets beyond +-15:59, which
    ISO 8601 (and Django's parser) allow, so an exotic offset must not reach the database."""

    def filter(self, qs, value):
        if value is not None and timezone.is_aware(value):
            try:
                value = value.astimezone(datetime.UTC)
            except OverflowError:
                raise ValidationError({self.field_name: ["Date and time out of range."]}) from None
        return super().filter(qs, value)


class APIFilterSet(filters.FilterSet):
    FILTER_DEFAULTS = {**filters.FilterSet.FILTER_DEFAULTS, models.DateTimeField: {"filter_class": UTCDateTimeFilter}}


class CustomerFilter(APIFilterSet):
    class Meta:
        model = Customer
        fields = {"external_id": ["exact"], "status": ["exact"], "segment": ["exact"], "email": ["exact"],
                  "created_at": ["gte", "lt"]}


@extend_schema_view(create=extend_schema(request=s.CustomerWriteSerializer, responses={201: s.CustomerSerializer},
                                         parameters=[IDEMPOTENCY_PARAM]))
class CustomerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, ApiViewSet):
    """Customers of the merchant, by the merchant's own external id."""

    queryset = Customer.objects.all()
    serializer_class = s.CustomerSerializer
    filterset_class = CustomerFilter
    ordering_fields = ("id", "created_at", "name", "mrr")

    def create(self, request, *args, **kwargs):
        data = s.CustomerWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        customer = Customer(**data.validated_data)
        customer.full_clean()
        customer.save()
        return Response(s.CustomerSerializer(customer).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, filters=False,
                   description="Everything held about the customer (profile, contacts, payment-method metadata, "
                               "invoices, attempts, messages, timeline), as in the admin's JSON export.")
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        return Response(export_customer(self.get_object()))


class PaymentMethodFilter(APIFilterSet):
    customer = filters.CharFilter(field_name="customer__external_id", help_text="Customer external id.")

    class Meta:
        model = PaymentMethod
        fields = ("customer", "is_default", "kind")


class PaymentMethodViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Saved payment methods (read only: brand, last 4 digits and expiry; never a card number)."""

    queryset = PaymentMethod.objects.select_related("customer")
    serializer_class = s.PaymentMethodSerializer
    filterset_class = PaymentMethodFilter
    ordering_fields = ("id", "created_at")


# --- Invoices --------------------------------------------------------------------------------------

class InvoiceFilter(APIFilterSet):
    customer = filters.CharFilter(field_name="customer__external_id", help_text="Customer external id.")

    class Meta:
        model = Invoice
        fields = {"external_id": ["exact"], "status": ["exact"], "currency": ["exact"],
                  "due_date": ["gte", "lt"], "created_at": ["gte", "lt"]}


@extend_schema_view(create=extend_schema(request=s.InvoiceWriteSerializer, responses={201: s.InvoiceSerializer},
                                         parameters=[IDEMPOTENCY_PARAM]))
class InvoiceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, ApiViewSet):
    queryset = Invoice.objects.select_related("customer")
    serializer_class = s.InvoiceSerializer
    filterset_class = InvoiceFilter
    ordering_fields = ("id", "created_at", "due_date", "issued_at", "amount_due")

    def create(self, request, *args, **kwargs):
        data = s.InvoiceWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        customer = Customer.objects.filter(external_id=v["customer"]).first()
        if customer is None:
            return _field_error("customer", f"No customer with external id {v['customer']}.")
        if Invoice.objects.filter(external_id=v["external_id"]).exists():
            return _field_error("external_id", "An invoice with this external id exists.")
        invoice = billing.create_invoice(
            customer=customer, external_id=v["external_id"], number=v.get("number") or v["external_id"],
            currency=v["currency"].upper(), amount_due=v["amount_due"], amount_paid=v["amount_paid"],
            issued_at=v["issued_at"], due_date=v["due_date"],
        )
        return Response(s.InvoiceSerializer(invoice).data, status=status.HTTP_201_CREATED)


def _field_error(field: str, message: str) -> Response:
    raise ValidationError({field: [message]})


# --- Payment events ----------------------------------------------------------------------------------

class PaymentEventFilter(APIFilterSet):
    kind = filters.ChoiceFilter(choices=InboundEvent.Kind.choices)

    class Meta:
        model = InboundEvent
        fields = ("kind", "status")


class PaymentEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Payment events from your billing system: payment_failed opens (or updates) a dunning case,
    payment_succeeded records the money and recovers the case, refunded lowers what was paid,
    payment_method_updated saves the new method and retries the open cases with it."""

    queryset = InboundEvent.objects.filter(source=InboundEvent.API)
    serializer_class = s.PaymentEventSerializer
    lookup_field = "event_id"
    lookup_value_regex = "[^/]+"
    filterset_class = PaymentEventFilter
    ordering_fields = ("id", "received_at")

    @extend_schema(request=s.PaymentEventInput,
                   responses={202: s.PaymentEventSerializer, 201: s.PaymentEventSerializer,
                              200: s.PaymentEventSerializer},
                   parameters=[IDEMPOTENCY_PARAM],
                   description="202 for payment_failed: stored as pending and applied by a worker within seconds "
                               "(GET the event for its status and result); 201 when applied at once (the other "
                               "types); 200 with duplicate=true when this event id was already received.")
    def create(self, request, *args, **kwargs):
        data = s.PaymentEventInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = dict(data.validated_data)
        outcome = events.ingest(v.pop("id"), v.pop("type"), v, api_key=request.auth)
        body = s.PaymentEventSerializer(outcome.event, context={"duplicate": outcome.duplicate}).data
        if outcome.duplicate:
            code = status.HTTP_200_OK
        elif outcome.event.status == InboundEvent.Status.PENDING:
            code = status.HTTP_202_ACCEPTED
        else:
            code = status.HTTP_201_CREATED
        return Response(body, status=code)


# --- Dunning cases ---------------------------------------------------------------------------------

class CaseFilter(APIFilterSet):
    customer = filters.CharFilter(field_name="customer__external_id", help_text="Customer external id.")
    invoice = filters.CharFilter(field_name="invoice__external_id", help_text="Invoice external id.")

    class Meta:
        model = DunningCase
        fields = {"status": ["exact"], "failed_at": ["gte", "lt"]}

    # Bounded like the column (a bigint), so an absurd id is a 400 rather than a database error.
    campaign = filters.NumberFilter(field_name="campaign_id", help_text="Campaign id.", min_value=1,
                                    max_value=2**63 - 1)


CASE_ACTION = extend_schema(request=s.CaseActionSerializer, responses={200: s.CaseDetailSerializer},
                            parameters=[IDEMPOTENCY_PARAM],
                            description="409 when the case is not in a state that allows this action.")


class CaseViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Dunning cases. The detail includes the timeline (every step, message, payment and action)."""

    queryset = DunningCase.objects.select_related("customer", "invoice")
    serializer_class = s.CaseSerializer
    filterset_class = CaseFilter
    atomic_post = False  # retry-now calls the payment gateway: never inside a transaction
    ordering_fields = ("id", "failed_at", "next_action_at", "created_at")

    def get_serializer_class(self):
        return s.CaseDetailSerializer if self.action != "list" else s.CaseSerializer

    def get_queryset(self):
        qs = super().get_queryset()
        return qs.prefetch_related("events") if self.action != "list" else qs

    def _act(self, request, func, **kwargs):
        case = self.get_object()
        body = s.CaseActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if "reason" in func.__code__.co_varnames and body.validated_data.get("reason"):
            kwargs["reason"] = body.validated_data["reason"]
        func(case, actor=request.auth.actor_label, **kwargs)
        case = self.get_queryset().get(pk=case.pk)
        return Response(s.CaseDetailSerializer(case).data)

    @CASE_ACTION
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._act(request, cases.pause_case)

    @CASE_ACTION
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._act(request, cases.resume_case)

    @CASE_ACTION
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._act(request, cases.cancel_case)

    @CASE_ACTION
    @action(detail=True, methods=["post"], url_path="retry-now")
    def retry_now(self, request, pk=None):
        return self._act(request, payments.retry_now)


# --- Campaigns ------------------------------------------------------------------------------------

class CampaignViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Escalation campaigns with their ordered steps (read only; staff edit them in the admin)."""

    queryset = Campaign.objects.prefetch_related("steps")
    serializer_class = s.CampaignSerializer
    filterset_fields = ("active",)
    ordering_fields = ("id", "priority", "name")


# --- In-app notifications ----------------------------------------------------------------------------

class NotificationFilter(APIFilterSet):
    customer = filters.CharFilter(field_name="customer__external_id", help_text="Customer external id.")
    unread = filters.BooleanFilter(field_name="read_at", lookup_expr="isnull", help_text="Only unread ones.")

    class Meta:
        model = Notification
        fields = ("customer", "unread", "status")


class NotificationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """In-app messages for your product's UI; mark them read when the customer has seen them."""

    queryset = Notification.objects.filter(channel=Channel.INAPP).select_related("customer")
    serializer_class = s.NotificationSerializer
    filterset_class = NotificationFilter
    ordering_fields = ("id", "created_at")

    @extend_schema(request=None, responses={200: s.NotificationSerializer}, parameters=[IDEMPOTENCY_PARAM])
    @action(detail=True, methods=["post"])
    def read(self, request, pk=None):
        notification = self.get_object()
        inapp.mark_read(notification)
        notification.refresh_from_db()
        return Response(s.NotificationSerializer(notification).data)


# --- Report summary -----------------------------------------------------------------------------------

class ReportSummaryView(IdempotentMixin, APIView):
    """Counts and amounts over all cases and payment attempts (a quick health view, not the full reports)."""

    @extend_schema(responses={200: s.ReportSummarySerializer})
    def get(self, request):
        by_status = dict(DunningCase.objects.values_list("status").annotate(n=Count("id")).order_by())
        recovered = _amounts(DunningCase.objects.filter(status=DunningCase.Status.RECOVERED))
        open_amounts = _amounts(DunningCase.objects.open(), remaining=True)
        closed = sum(n for k, n in by_status.items() if k not in DunningCase.OPEN_STATUSES)
        attempts = PaymentAttempt.objects.aggregate(
            total=Count("id"), ok=Count("id", filter=Q(outcome=PaymentAttempt.Outcome.SUCCEEDED)))
        body = {
            "open_cases": sum(by_status.get(k, 0) for k in DunningCase.OPEN_STATUSES),
            "cases_by_status": {k: by_status.get(k, 0) for k in DunningCase.Status.values},
            "recovered_amount": recovered,
            "open_amount": open_amounts,
            "recovery_rate": round(by_status.get(DunningCase.Status.RECOVERED, 0) / closed, 4) if closed else 0.0,
            "attempts": attempts["total"],
            "attempts_succeeded": attempts["ok"],
        }
        return Response(s.ReportSummarySerializer(body).data)


def _amounts(cases, remaining: bool = False) -> dict[str, str]:
    rows = cases.values_list("invoice__currency").annotate(
        due=Sum("invoice__amount_due"), paid=Sum("invoice__amount_paid")).order_by("invoice__currency")
    return {cur: str(to_amount((due - paid) if remaining else due, cur)) for cur, due, paid in rows}


def not_found(request, *args, **kwargs):
    return JsonResponse({"error": {"status": 404, "code": "not_found", "message": "No such API endpoint.",
                                   "fields": {}}}, status=404)


def ping(request):
    """A bare Django view on the same server, the baseline for the API benchmark (no auth, no DB)."""
    return JsonResponse({"ok": True})

