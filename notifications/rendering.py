"""Render message templates with Django's template language, money and dates formatted by Babel."""

from __future__ import annotations

import datetime
from decimal import Decimal, InvalidOperation

from babel.dates import format_date
from babel.numbers import format_currency
from django.conf import settings
from django.template import Context, Engine, TemplateSyntaxError

from notifications.models import MessageTemplate

INVALID = "\x00INVALID:%s\x00"

_text_engine = Engine(autoescape=False, string_if_invalid=INVALID, libraries={})
_html_engine = Engine(autoescape=True, string_if_invalid=INVALID, libraries={})

# Every variable a template may use, with sample values for previews and the save-time check.
SAMPLE_CONTEXT = {
    "customer_name": "Ada Lovelace",
    "merchant_name": "Acme Cloud",
    "support_email": "support@example.com",
    "invoice_number": "INV-0001",
    "amount": "49.00",
    "currency": "USD",
    "due_date": "2026-11-01",
    "failed_at": "2026-11-02",
    "days_overdue": 3,
    "portal_url": "https://billing.example.com/portal/t/sample/",
    "unsubscribe_url": "https://billing.example.com/portal/t/sample/preferences/",
    "next_retry_date": "2026-11-05",
    "suspension_date": "2026-11-16",
    "card_brand": "Visa",
    "card_last4": "4242",
    "invoices": [{"number": "INV-0001", "amount": "49.00", "currency": "USD", "due_date": "2026-11-01"}],
    # Billing contacts, consolidated reminders and late fees (docs/fees.md, docs/contacts.md).
    "contact_name": "Grace Hopper",
    "invoice_count": 1,
    "fees": [{"label": "Late fee", "amount": "15.00", "currency": "USD", "invoice_number": "INV-0001"}],
    "fees_total": "15.00",
    "total_owed": "64.00",
}


class TemplateRenderError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _money(amount, currency: str, locale: str) -> str:
    try:
        return format_currency(Decimal(str(amount)), currency, locale=locale)
    except (InvalidOperation, ValueError, TypeError):
        return f"{amount} {currency}"


def _date(value, locale: str) -> str:
    if not value:
        return ""
    try:
        day = datetime.date.fromisoformat(str(value)[:10])
    except ValueError:
        return str(value)
    return format_date(day, format="long", locale=locale)


def localize_context(raw: dict, locale: str) -> dict:
    """Turn stored merge data (ISO dates, decimal strings) into text for the customer's locale."""
    ctx = {
        "merchant_name": settings.MERCHANT_NAME,
        "support_email": settings.MERCHANT_SUPPORT_EMAIL,
        "brand_color": settings.MERCHANT_BRAND_COLOR,
        **raw,
    }
    currency = ctx.get("currency") or "USD"
    if ctx.get("amount") not in ("", None):
        ctx["amount"] = _money(ctx["amount"], currency, locale)
    for key in ("fees_total", "total_owed"):
        if ctx.get(key) not in ("", None):
            ctx[key] = _money(ctx[key], currency, locale)
    ctx["fees"] = [{**fee, "amount": _money(fee.get("amount", "0"), fee.get("currency", currency), locale)}
                   for fee in ctx.get("fees", [])]
    for key in ("due_date", "failed_at", "next_retry_date", "suspension_date"):
        if key in ctx:
            ctx[key] = _date(ctx[key], locale)
    ctx["invoices"] = [
        {
            **inv,
            "amount": _money(inv.get("amount", "0"), inv.get("currency", currency), locale),
            "due_date": _date(inv.get("due_date"), locale),
        }
        for inv in ctx.get("invoices", [])
    ]
    return ctx


def _render(engine: Engine, source: str, ctx: dict, field: str) -> str:
    try:
        output = engine.from_string(source).render(Context(ctx))
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(field, f"Template error: {exc}") from None
    except Exception as exc:  # a filter raising at render time is a template error too
        raise TemplateRenderError(field, f"Template error: {exc}") from None
    if "\x00INVALID:" in output:
        name = output.split("\x00INVALID:", 1)[1].split("\x00", 1)[0]
        raise TemplateRenderError(field, f"Unknown variable {name!r}")
    return output


def render_parts(template: MessageTemplate, raw_context: dict, locale: str) -> tuple[str, str, str]:
    # Known variables missing from the stored merge data render empty rather than failing at send
    # time; unknown ones were refused when the template was saved.
    blanks = {key: ([] if isinstance(value, list) else "") for key, value in SAMPLE_CONTEXT.items()}
    ctx = localize_context({**blanks, **raw_context}, locale)
    subject = _render(_text_engine, template.subject, ctx, "subject").strip() if template.subject else ""
    text = _render(_text_engine, template.body_text, ctx, "body_text")
    html = _render(_html_engine, template.body_html, ctx, "body_html") if template.body_html else ""
    return subject, text, html


def check_template(template: MessageTemplate) -> None:
    """Render with sample data; raises TemplateRenderError naming the field and the problem."""
    render_parts(template, dict(SAMPLE_CONTEXT), template.locale or "en")


def find_template(code: str, channel: str, locale: str, cache: dict | None = None) -> MessageTemplate | None:
    """The template in the customer's language, else English."""
    key = (code, channel, locale)
    if cache is not None and key in cache:
        return cache[key]
    found = None
    for candidate in dict.fromkeys([locale, settings.LANGUAGE_CODE, "en"]):
        found = MessageTemplate.objects.filter(code=code, channel=channel, locale=candidate).first()
        if found:
            break
    if cache is not None:
        cache[key] = found
    return found
