from __future__ import annotations

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from customers.models import Customer, TimestampedModel
from notifications.rendering import TemplateRenderError, check_template

# What outbound webhooks can announce (notifications.webhooks); an endpoint subscribes to some of them.
EVENT_TYPES = [
    "case.opened",
    "case.step_completed",
    "payment.recovered",
    "customer.suspended",
    "customer.reinstated",
    "case.exhausted",
    "webhook.test",
]


def _new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class Channel(models.TextChoices):
    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")
    INAPP = "inapp", _("In-app message")
    WEBHOOK = "webhook", _("Webhook")


class MessageTemplateQuerySet(models.QuerySet):
    def find(self, code: str, channel: str, locale: str) -> MessageTemplate | None:
        """The template in this language, else the site's default language, else English."""
        for candidate in dict.fromkeys([locale, settings.LANGUAGE_CODE, "en"]):
            found = self.filter(code=code, channel=channel, locale=candidate).first()
            if found:
                return found
        return None


class MessageTemplate(TimestampedModel):
    """The text of one message (a template code such as ``reminder``) for one channel and language.

    Bodies use Django's template language; the variables are listed in docs/templates.md.
    """

    code = models.SlugField(max_length=64, help_text=_("Which message this is, e.g. first_notice, final_notice."))
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.EMAIL)
    locale = models.CharField(max_length=8, choices=settings.LANGUAGES, default="en")
    subject = models.CharField(max_length=255, blank=True)
    body_text = models.TextField()
    body_html = models.TextField(blank=True, help_text=_("Optional HTML body for email; plain text is always sent."))

    objects = MessageTemplateQuerySet.as_manager()

    class Meta:
        ordering = ["code", "channel", "locale"]
        constraints = [
            models.UniqueConstraint(fields=["code", "channel", "locale"], name="template_unique_code_channel_locale")
        ]

    def __str__(self) -> str:
        return f"{self.code} / {self.channel} / {self.locale}"

    def clean(self) -> None:
        try:
            check_template(self)
        except TemplateRenderError as exc:
            raise ValidationError({exc.field: str(exc)}) from None


class NotificationQuerySet(models.QuerySet):
    def queued(self):
        return self.filter(status=Notification.Status.QUEUED)


class Notification(TimestampedModel):
    """The outbox: one row per message, written in the same transaction as whatever caused it.

    ``dedupe_key`` is unique, so re-running the cause never queues a second copy. The sender
    (notifications.services.send_queued) claims rows under a lease (queued -> sending, ``claimed_by``,
    ``lease_until``) and sets ``attempted_at`` just before its own provider call: when a lease runs out,
    a row never attempted goes back to the queue, an attempted one becomes ``unknown`` (the provider
    may have taken it) and is never sent again unless staff resend it.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")
        # The sender stopped while the provider had the message: it may or may not have gone out.
        UNKNOWN = "unknown", _("Unknown (sender stopped)")

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.EMAIL)
    recipient = models.CharField(max_length=255, blank=True)
    template_code = models.SlugField(max_length=64, db_index=False)
    locale = models.CharField(max_length=8, default="en")
    context = models.JSONField(default=dict, blank=True, help_text=_("Merge data, rendered at send time."))
    subject = models.CharField(max_length=255, blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    # Indexes are declared in Meta: a CharField's db_index adds a second, unused LIKE index on
    # PostgreSQL, and every engine step inserts a row here.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    dedupe_key = models.CharField(max_length=200)
    reference = models.CharField(
        max_length=100, blank=True, help_text=_("What caused the message, e.g. case:42.")
    )
    send_after = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)
    # The sender's lease: which worker holds the row ('sending') and until when.
    claimed_by = models.CharField(max_length=100, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Set just before the provider call: from then on the message may have gone out.
    attempted_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # In-app messages: shown in the portal and readable through the API until dismissed.
    read_at = models.DateTimeField(null=True, blank=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)
    # Email delivery tracking (anymail webhooks): the latest state and when each milestone happened.
    tracking_status = models.CharField(max_length=16, blank=True, help_text=_("delivered, bounced, opened..."))
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    bounced_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Scanned by the sender (notifications.tasks.send_queued).
            models.Index(fields=["send_after"], condition=models.Q(status="queued"), name="notification_queued_idx"),
            # Read per claimed batch by the contact cap (notifications.policy.SendGate).
            models.Index(fields=["customer", "sent_at"], condition=models.Q(status="sent"),
                         name="notification_cap_idx"),
            models.Index(fields=["status"], name="notification_status_idx"),
            models.Index(fields=["reference"], name="notification_reference_idx"),
            models.Index(fields=["provider_message_id"], name="notification_provider_id_idx"),
            models.Index(fields=["template_code"], name="notification_template_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["dedupe_key"], name="notification_unique_dedupe_key"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {self.template_code} to {self.recipient or self.customer_id}"


class WebhookEndpoint(TimestampedModel):
    """A URL of the merchant's own app that receives signed event notifications (docs/webhooks.md)."""

    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(
        max_length=128, default=_new_webhook_secret,
        help_text=_("Shared secret for the HMAC-SHA256 signature; give it to the receiving app."),
    )
    events = models.JSONField(
        default=list, blank=True,
        help_text=_('Event types to send, e.g. ["case.opened", "payment.recovered"]. Empty: all events.'),
    )
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["url", "id"]

    def __str__(self) -> str:
        return self.description or self.url

    def clean(self) -> None:
        if not isinstance(self.events, list) or any(e not in EVENT_TYPES for e in self.events):
            raise ValidationError({"events": _("Use a list of event types from: %s.") % ", ".join(EVENT_TYPES)})

    def wants(self, event_type: str) -> bool:
        return self.active and (not self.events or event_type in self.events)


class WebhookDelivery(TimestampedModel):
    """One event for one endpoint: the delivery log and the outbox of outbound webhooks."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENDING = "sending", _("Sending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=200, help_text=_("Stable id of the event (the dedupe key)."))
    event_type = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_delivery_unique_event"),
        ]
        indexes = [
            # Scanned by the webhook sender (notifications.webhooks.deliver_due).
            models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"),
                         name="webhook_delivery_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} → {self.endpoint_id} ({self.status})"
