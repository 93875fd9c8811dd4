from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from customers.models import Customer, TimestampedModel


class Channel(models.TextChoices):
    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")
    INAPP = "inapp", _("In-app message")
    WEBHOOK = "webhook", _("Webhook")


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

    class Meta:
        ordering = ["code", "channel", "locale"]
        constraints = [
            models.UniqueConstraint(fields=["code", "channel", "locale"], name="template_unique_code_channel_locale")
        ]

    def __str__(self) -> str:
        return f"{self.code} / {self.channel} / {self.locale}"

    def clean(self) -> None:
        from notifications.rendering import TemplateRenderError, check_template

        try:
            check_template(self)
        except TemplateRenderError as exc:
            raise ValidationError({exc.field: str(exc)}) from None


class NotificationQuerySet(models.QuerySet):
    def queued(self):
        return self.filter(status=Notification.Status.QUEUED)


class Notification(TimestampedModel):
    """The outbox: one row per message, written in the same transaction as whatever caused it.

    ``dedupe_key`` is unique, so re-running the cause never queues a second copy; the sender claims
    a row (queued -> sending) before it talks to the provider, so a re-run never sends it twice.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.EMAIL)
    recipient = models.CharField(max_length=255, blank=True)
    template_code = models.SlugField(max_length=64)
    locale = models.CharField(max_length=8, default="en")
    context = models.JSONField(default=dict, blank=True, help_text=_("Merge data, rendered at send time."))
    subject = models.CharField(max_length=255, blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    dedupe_key = models.CharField(max_length=200, unique=True)
    reference = models.CharField(
        max_length=100, blank=True, db_index=True, help_text=_("What caused the message, e.g. case:42.")
    )
    send_after = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # In-app messages: shown in the portal and readable through the API until dismissed.
    read_at = models.DateTimeField(null=True, blank=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Scanned by the sender (notifications.tasks.send_queued).
            models.Index(fields=["send_after"], condition=models.Q(status="queued"), name="notification_queued_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {self.template_code} to {self.recipient or self.customer_id}"
