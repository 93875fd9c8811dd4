"""What staff see of messages (the admin calls these): template previews, "send test to me", and
sent messages in the outbox.

A portal link is the customer's credential, so no staff page shows one as it was sent: previews and
tests carry an inert placeholder, and the outbox passes message text through
settings.NOTIFICATION_LINK_MASK (working links only for staff allowed to send them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.mail import EmailMultiAlternatives
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import import_string

from notifications.models import Channel, MessageTemplate, Notification
from notifications.rendering import SAMPLE_CONTEXT, TemplateRenderError, context_for_reference, render_parts

PLACEHOLDER_TOKEN = "preview-link-not-valid"


def placeholder_links() -> dict:
    """The links a preview shows: they open the portal's "this link does not work" page."""
    base = f"{settings.SITE_URL}/portal/{PLACEHOLDER_TOKEN}/"
    return {"portal_url": base, "unsubscribe_url": f"{base}preferences/"}


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
    ctx = preview_context(reference) | placeholder_links()
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


@lru_cache(maxsize=4)
def _mask_factory(path: str) -> Callable:
    return import_string(path) if path else (lambda user: lambda text: text)


def shown_to(user, row: Notification) -> dict[str, str]:
    """The parts of a sent message that can hold portal links, as this staff member may see them."""
    mask = _mask_factory(settings.NOTIFICATION_LINK_MASK)(user)
    context = json.dumps(row.context, ensure_ascii=False, sort_keys=True, cls=DjangoJSONEncoder)
    return {"subject": mask(row.subject), "body_text": mask(row.body_text), "body_html": mask(row.body_html),
            "context": mask(context)}
