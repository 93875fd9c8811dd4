"""Template previews and "send test to me" for staff (the admin calls these)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.mail import EmailMultiAlternatives

from notifications.models import Channel, MessageTemplate
from notifications.rendering import SAMPLE_CONTEXT, TemplateRenderError, context_for_reference, render_parts


class PreviewError(Exception):
    pass


def preview_context(reference: str = "") -> dict:
    """Sample merge data, or the data a real message about ``reference`` (e.g. case:42) would carry."""
    if not reference:
        return dict(SAMPLE_CONTEXT)
    try:
        ctx = context_for_reference(reference)
    except ObjectDoesNotExist:
        raise PreviewError(f"{reference} does not exist") from None
    if ctx is None:
        raise PreviewError(f"Cannot preview for {reference!r}: use case:<id>, or leave it blank for sample data")
    return ctx


def preview(template: MessageTemplate, reference: str = "") -> dict:
    ctx = preview_context(reference)
    try:
        subject, text, html = render_parts(template, ctx, template.locale or "en")
    except TemplateRenderError as exc:
        raise PreviewError(f"{exc.field}: {exc}") from None
    return {"subject": subject, "text": text, "html": html, "channel": template.channel,
            "sms_length": len(text.strip()) if template.channel == Channel.SMS else None}


def send_test_to(template: MessageTemplate, email: str, reference: str = "") -> None:
    """Email the rendered template to a staff member. SMS and in-app templates arrive as an email
    showing their text, so a test never reaches a customer's phone or portal."""
    result = preview(template, reference)
    label = f"[Test {template.get_channel_display()} · {template.code} · {template.locale}]"
    subject = f"{label} {result['subject']}".strip()
    message = EmailMultiAlternatives(subject=subject, body=result["text"], from_email=settings.DEFAULT_FROM_EMAIL,
                                     to=[email])
    if result["html"]:
        message.attach_alternative(result["html"], "text/html")
    message.send()
