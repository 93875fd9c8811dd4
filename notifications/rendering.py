"""Render message templates with Django's template language, money and dates formatted by Babel."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency
from django.conf import settings
from django.template import Context, Engine, TemplateSyntaxError
from django.utils.html import escape
from django.utils.safestring import mark_safe

if TYPE_CHECKING:  # the models check templates with this module: it imports none of them
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


LAYOUT_PATH = Path(__file__).resolve().parent / "templates" / "notifications" / "email" / "layout.html"
_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")
# The call-to-action button for the portal link in emails built from the plain text.
BUTTON_LABELS = {
    "en": "Review and pay",
    "es": "Revisar y pagar",
    "it": "Verifichi e paghi",
    "ja": "内容を確認してお支払い",
    "uk": "Переглянути й сплатити",
}

# Where previews get merge data for a real object: prefix of a reference ("case") -> function
# taking the id and returning the context a message about it would carry. Registered by the app
# that owns the object (dunning registers "case"), so notifications imports nothing above it.
_context_providers: dict[str, Callable[[int], dict]] = {}


def register_context_provider(prefix: str, provider: Callable[[int], dict]) -> None:
    _context_providers[prefix] = provider


def context_for_reference(reference: str) -> dict | None:
    prefix, _sep, pk = reference.partition(":")
    provider = _context_providers.get(prefix)
    if provider is None or not pk.isdigit():
        return None
    return provider(int(pk))


class TemplateRenderError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@lru_cache(maxsize=32)
def _locale(code: str) -> Locale:
    return Locale.parse(code)


def _money(amount, currency: str, locale: str) -> str:
    return _format_money(str(amount), str(currency), locale)


@lru_cache(maxsize=8192)
def _format_money(amount: str, currency: str, locale: str) -> str:
    # Subscription prices repeat: Babel's formatting is the dearest part of rendering a message.
    try:
        return format_currency(Decimal(amount), currency, locale=_locale(locale))
    except (InvalidOperation, ValueError, TypeError):
        return f"{amount} {currency}"


def _date(value, locale: str) -> str:
    if not value:
        return ""
    return _format_day(str(value)[:10], locale)


@lru_cache(maxsize=4096)
def _format_day(iso: str, locale: str) -> str:
    # Messages of one run share a handful of dates: formatting each once is enough.
    try:
        day = datetime.date.fromisoformat(iso)
    except ValueError:
        return iso
    return format_date(day, format="long", locale=_locale(locale))


def localize_context(raw: dict, locale: str) -> dict:
    """Turn stored merge data (ISO dates, decimal strings) into text for the customer's locale."""
    ctx = {
        **raw,
        # The merchant's identity always comes from settings (sample data included).
        "merchant_name": settings.MERCHANT_NAME,
        "support_email": settings.MERCHANT_SUPPORT_EMAIL,
        # Goes into inline CSS: only a hex colour is accepted.
        "brand_color": settings.MERCHANT_BRAND_COLOR if _COLOR.match(settings.MERCHANT_BRAND_COLOR) else "#1f4fd1",
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


@lru_cache(maxsize=1024)
def _compile(autoescape: bool, source: str):
    # Compiling is most of the cost of rendering: a sender renders the same few templates
    # thousands of times. Keyed by the source, so an edited template is compiled afresh.
    return (_html_engine if autoescape else _text_engine).from_string(source)


def _render(engine: Engine, source: str, ctx: dict, field: str) -> str:
    try:
        # The Context decides escaping, not the Engine: Context() escapes by default, which turned
        # "O'Brien & Sons" into "O&#x27;Brien &amp; Sons" in subjects, text and SMS (and twice in the
        # HTML built from the text).
        output = _compile(engine.autoescape, source).render(Context(ctx, autoescape=engine.autoescape))
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(field, f"Template error: {exc}") from None
    except Exception as exc:  # a filter raising at render time is a template error too
        raise TemplateRenderError(field, f"Template error: {exc}") from None
    if "\x00INVALID:" in output:
        name = output.split("\x00INVALID:", 1)[1].split("\x00", 1)[0]
        raise TemplateRenderError(field, f"Unknown variable {name!r}")
    # A plain str, not Django's SafeString: wherever it is shown later it must be escaped again.
    return str.__str__(output)


def render_parts(template: MessageTemplate, raw_context: dict, locale: str) -> tuple[str, str, str]:
    # Known variables missing from the stored merge data render empty rather than failing at send
    # time; unknown ones were refused when the template was saved.
    blanks = {key: ([] if isinstance(value, list) else "") for key, value in SAMPLE_CONTEXT.items()}
    ctx = localize_context({**blanks, **raw_context}, locale)
    subject = _render(_text_engine, template.subject, ctx, "subject").strip() if template.subject else ""
    text = _render(_text_engine, template.body_text, ctx, "body_text")
    html = _render(_html_engine, template.body_html, ctx, "body_html") if template.body_html else ""
    if template.channel == "email":
        html = wrap_email(subject, html, text, ctx, locale)
    return subject, text, html


_P = '<p style="margin:0 0 16px;">{}</p>'
_BUTTON = (
    '<table role="presentation" cellpadding="0" cellspacing="0" border="0" style="margin:4px 0 20px;"><tr>'
    '<td style="background:{color};border-radius:6px;"><a href="{url}" style="display:inline-block;'
    'padding:12px 22px;color:#ffffff;text-decoration:none;font-weight:600;">{label}</a></td></tr></table>'
)


# Links and addresses in plain text. ASCII only, so that a URL written right after Japanese text
# (or followed by it) without a space is still cut at the right place; django's urlize is not.
_LINK = re.compile(
    r"(?P<url>https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'*+,;=%]+[A-Za-z0-9\-_~/#=&%+])"
    r"|(?P<email>[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,})",
    re.ASCII,
)


def linkify(text: str) -> str:
    """Escape plain text and turn its URLs and email addresses into links."""
    out, last = [], 0
    for match in _LINK.finditer(text):
        out.append(escape(text[last:match.start()]))
        target = match.group(0)
        href = target if match.group("url") else f"mailto:{target}"
        out.append(f'<a href="{escape(href)}">{escape(target)}</a>')
        last = match.end()
    out.append(escape(text[last:]))
    return "".join(out)


def text_to_html(text: str, ctx: dict, locale: str) -> tuple[str, str]:
    """(content, footer) HTML for an email written as plain text: paragraphs, links, the portal
    link as a button, the preferences paragraph moved to the footer."""
    portal, unsubscribe = ctx.get("portal_url") or "", ctx.get("unsubscribe_url") or ""
    label = escape(BUTTON_LABELS.get(locale, BUTTON_LABELS["en"]))
    content, footer = [], []
    for para in re.split(r"\n\s*\n", text.strip()):
        if unsubscribe and unsubscribe in para:
            footer.append(linkify(para.strip()))
            continue
        lines: list[str] = []
        for line in para.split("\n"):
            if portal and line.strip() == portal:
                if lines:
                    content.append(_P.format("<br>".join(lines)))
                    lines = []
                content.append(_BUTTON.format(color=ctx["brand_color"], url=escape(portal), label=label))
            else:
                lines.append(linkify(line))
        if lines:
            content.append(_P.format("<br>".join(lines)))
    return "\n".join(content), "<br>".join(footer)


def wrap_email(subject: str, html: str, text: str, ctx: dict, locale: str) -> str:
    """The full HTML email: the template's own HTML body, or one built from the text, in the
    merchant's layout (name and brand colour from settings)."""
    if html:
        content, footer = html, ""
        if ctx.get("unsubscribe_url") and ctx["unsubscribe_url"] not in html:
            footer = linkify(ctx["unsubscribe_url"])
    else:
        content, footer = text_to_html(text, ctx, locale)
    preheader = next((line for line in text.strip().splitlines()[1:] if line.strip()), "")[:140]
    layout = {
        "locale": locale, "subject": subject, "preheader": preheader, "merchant_name": ctx["merchant_name"],
        "support_email": ctx["support_email"], "brand_color": ctx["brand_color"],
        "content": mark_safe(content), "footer": mark_safe(footer),  # noqa: S308 - escaped above
    }
    return str.__str__(_compile(True, _layout_source()).render(Context(layout)))


@lru_cache(maxsize=1)
def _layout_source() -> str:
    return LAYOUT_PATH.read_text(encoding="utf-8")


def check_template(template: MessageTemplate) -> None:
    """Render with sample data; raises TemplateRenderError naming the field and the problem."""
    render_parts(template, dict(SAMPLE_CONTEXT), template.locale or "en")
