"""API keys, idempotency records, the inbox of external events and background import jobs."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from customers.models import TimestampedModel

KEY_PREFIX = "dk"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def usable(self):
        return self.filter(revoked_at__isnull=True)


class ApiKey(TimestampedModel):
    """A client of the REST API. Only a SHA-256 of the secret is stored; the key is shown once.

    The full key is ``dk_<prefix>_<secret>``: the prefix finds the row, the hash proves the secret.
    """

    class Scope(models.TextChoices):
        READ = "read", _("Read only")
        READ_WRITE = "read_write", _("Read and write")

    name = models.CharField(max_length=100, help_text=_("Who uses it, e.g. 'billing system (production)'."))
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.READ)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API key")

    def __str__(self) -> str:
        return f"{self.name} ({KEY_PREFIX}_{self.prefix}_…)"

    @classmethod
    def issue(cls, name: str, scope: str = Scope.READ, *, created_by=None) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the full key, which is never stored nor shown again."""
        prefix = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        key = cls.objects.create(name=name, scope=scope, prefix=prefix, secret_hash=hash_secret(secret),
                                 created_by=created_by)
        return key, f"{KEY_PREFIX}_{prefix}_{secret}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.READ_WRITE

    @property
    def actor_label(self) -> str:
        return f"api:{self.name}"[:100]

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at", "updated_at"])


class IdempotencyRecord(models.Model):
    """The first response to a POST with an Idempotency-Key, replayed for later requests with that key."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text=_("Empty while in progress."))
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_unique_key")]

    def __str__(self) -> str:
        return f"{self.key} -> {self.status_code}"


class InboundEvent(models.Model):
    """An event received from outside, stored once: deduplicated by its source's own event id.

    Sources: ``api`` (the merchant's billing system, through POST /api/v1/payment-events/) and each
    payment gateway by name (its signed webhooks, e.g. ``stripe``). What each event means for
    invoices, cases and saved methods is integrations.inbound's; this row is the inbox and its log.

    ``payment_failed`` events from the API are a queue: stored as pending by the request, then
    applied in batches by a worker (integrations.events.apply_pending), each exactly once. Every
    other event is applied by the request that brought it, in the transaction that stores it.
    """

    class Kind(models.TextChoices):
        """The event types of the REST API (a gateway's events keep the gateway's own type names)."""

        PAYMENT_FAILED = "payment_failed", _("Payment failed")
        PAYMENT_SUCCEEDED = "payment_succeeded", _("Payment succeeded")
        REFUNDED = "refunded", _("Refunded")
        PAYMENT_METHOD_UPDATED = "payment_method_updated", _("Payment method updated")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        APPLIED = "applied", _("Applied")
        REJECTED = "rejected", _("Rejected")

    API = "api"  # the source of the REST API's events

    source = models.CharField(max_length=32, default=API, help_text=_("api, or the gateway that sent it."))
    event_id = models.CharField(max_length=255, help_text=_("The id its source gave it."))
    kind = models.CharField(max_length=100)  # its type as its source names it (payment_failed, invoice.paid...)
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    payload = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.APPLIED)
    invoice = models.ForeignKey("billing.Invoice", on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="+", db_index=False)
    error = models.TextField(blank=True, help_text=_("Why the event was rejected."))
    tries = models.PositiveSmallIntegerField(default=0, help_text=_("Failed attempts to apply it (internal errors)."))
    applied_at = models.DateTimeField(null=True, blank=True)
    # A gateway event's object (a payment method, a customer) and when the gateway made the event:
    # an update older than the last one applied to the same object is not applied (out-of-order delivery).
    object_id = models.CharField(max_length=255, blank=True)
    object_created = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = _("inbound event")
        constraints = [
            models.UniqueConstraint(fields=["source", "event_id"], name="inbound_event_unique_id"),
        ]
        indexes = [
            # The worker's queue: only pending rows are in it, so it stays small however many events exist.
            models.Index(fields=["id"], condition=models.Q(status="pending"), name="inboundevent_pending_idx"),
            # The out-of-order check of gateway updates (integrations.gateway_events); API events have none.
            models.Index(fields=["object_id"], condition=~models.Q(object_id=""), name="inboundevent_object_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.kind} {self.event_id}"


class ImportJob(TimestampedModel):
    """An invoice import started in the admin; large files run in the background and report progress."""

    class Status(models.TextChoices):
        VALIDATING = "validating", _("Validating")
        PREVIEW = "preview", _("Validated, waiting for confirmation")
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    class NumberFormat(models.TextChoices):
        # Declared by staff: an amount such as 1,234 or 1.234 could be either, and is refused unless declared.
        UNDECLARED = "", _("Not declared: refuse amounts like 1,234 or 1.234")
        DECIMAL_POINT = "point", _("Decimal point: 1,234.56")
        DECIMAL_COMMA = "comma", _("Decimal comma: 1.234,56")

    file_name = models.CharField(max_length=255)
    stored_path = models.CharField(max_length=255, help_text=_("Path in the default storage."))
    size = models.PositiveBigIntegerField(default=0)
    format = models.CharField(max_length=16, default="native")
    date_format = models.CharField(max_length=32, blank=True)
    number_format = models.CharField(max_length=8, choices=NumberFormat.choices, blank=True, default="")
    valid_only = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PREVIEW, db_index=True)
    phase = models.CharField(max_length=16, blank=True)
    processed = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("invoice import")

    def __str__(self) -> str:
        return f"{self.file_name} ({self.get_status_display()})"
