"""Shipped templates in every language, locale formatting, fallback, and the template admin."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from dunning.cases import open_case
from notifications.defaults import iter_default_templates
from notifications.models import MessageTemplate, Notification
from notifications.rendering import SAMPLE_CONTEXT, render_parts
from tests.factories import CustomerFactory, InvoiceFactory

pytestmark = pytest.mark.django_db

LOCALES = ["en", "es", "it", "ja", "uk"]
CODES = ["first_notice", "reminder", "final_notice", "suspended", "update_payment_method", "card_expiring"]
CHANNELS = ["email", "sms", "inapp"]
SHIPPED = {(d["code"], d["channel"], d["locale"]): d for d in iter_default_templates()}

# What the amount looks like, per locale and currency (CLDR via Babel).
EXPECTED_MONEY = {
    ("en", "USD"): "$1,234.56", ("en", "EUR"): "€1,234.56", ("en", "JPY"): "¥12,000",
    ("es", "USD"): "1.234,56 US$", ("es", "EUR"): "1.234,56 €", ("es", "JPY"): "12.000 JPY",
    ("it", "USD"): "1.234,56 USD", ("it", "EUR"): "1.234,56 €", ("it", "JPY"): "12.000 JPY",
    ("ja", "USD"): "$1,234.56", ("ja", "EUR"): "€1,234.56", ("ja", "JPY"): "￥12,000",
    ("uk", "USD"): "1 234,56 USD", ("uk", "EUR"): "1 234,56 EUR", ("uk", "JPY"): "12 000 ¥",
}


def test_every_message_is_shipped_for_every_channel_and_language():
    missing = [(c, ch, loc) for c in CODES for ch in CHANNELS for loc in LOCALES if (c, ch, loc) not in SHIPPED]
    assert missing == []


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY"])
def test_every_shipped_template_renders_with_money_for_the_locale(locale, currency):
    amount = "12000" if currency == "JPY" else "1234.56"
    expected = EXPECTED_MONEY[(locale, currency)]
    for code in CODES:
        for channel in CHANNELS:
            template = MessageTemplate(**SHIPPED[(code, channel, locale)])
            ctx = {**SAMPLE_CONTEXT, "currency": currency, "amount": amount,
                   "invoices": [{"number": "INV-1", "amount": amount, "currency": currency, "due_date": "2026-11-01"}]}
            subject, text, html = render_parts(template, ctx, locale)
            label = f"{code}.{channel}.{locale}"
            assert "{{" not in text + subject and "{%" not in text + subject, label
            if channel != "sms":
                assert subject.strip(), label
            if code not in ("card_expiring",):
                # The amount appears formatted for the locale (a non-breaking space counts as a space).
                if "amount" in SHIPPED[(code, channel, locale)]["body_text"]:
                    assert expected in text.replace("\xa0", " ").replace("\u202f", " "), (label, text)
            if channel == "email":
                assert SAMPLE_CONTEXT["unsubscribe_url"] in text, f"{label}: every email carries an opt-out"
                assert html.startswith("<!DOCTYPE html>") and "Acme Cloud" in html and "#1f4fd1" in html
                assert SAMPLE_CONTEXT["portal_url"] in html
            if channel == "sms":
                assert "STOP" in text, f"{label}: every SMS carries an opt-out"
                assert SAMPLE_CONTEXT["portal_url"] in text


def test_money_and_dates_follow_the_customers_locale():
    ja = MessageTemplate(**SHIPPED[("final_notice", "email", "ja")])
    _s, text, _h = render_parts(ja, {"amount": "12000", "currency": "JPY", "suspension_date": "2026-11-16"}, "ja")
    assert "￥12,000" in text and "2026年11月16日" in text
    it = MessageTemplate(**SHIPPED[("final_notice", "email", "it")])
    _s, text, _h = render_parts(it, {"amount": "1234.56", "currency": "EUR", "suspension_date": "2026-11-16"}, "it")
    assert "1.234,56\xa0€" in text and "16 novembre 2026" in text
    en = MessageTemplate(**SHIPPED[("reminder", "email", "en")])
    _s, text, _h = render_parts(en, {"amount": "12000", "currency": "JPY"}, "en")
    assert "¥12,000" in text


def test_tone_is_courteous_early_and_firm_in_the_final_notice():
    for locale, courteous, firm in [
        ("en", "friendly reminder", "final notice"),
        ("es", "amablemente", "último aviso"),
        ("it", "cortesemente", "ultimo avviso"),
        ("ja", "ありがとうございます", "最終"),
        ("uk", "Люб'язно", "останнє попередження"),
    ]:
        assert courteous.lower() in SHIPPED[("reminder", "email", locale)]["body_text"].lower()
        final = SHIPPED[("final_notice", "email", locale)]
        assert firm.lower() in (final["subject"] + final["body_text"]).lower()


def test_html_email_uses_the_merchant_name_and_colour(settings):
    settings.MERCHANT_NAME = "Globex"
    settings.MERCHANT_BRAND_COLOR = "#aa3300"
    template = MessageTemplate(**SHIPPED[("first_notice", "email", "en")])
    _s, _t, html = render_parts(template, dict(SAMPLE_CONTEXT), "en")
    assert "Globex" in html and "background:#aa3300" in html
    assert 'name="viewport"' in html and "max-width:600px" in html
    assert re.search(r'<a href="https://billing\.example\.com/portal/t/sample/"[^>]*>Review and pay</a>', html)
    # A colour that is not a hex code never reaches the CSS.
    settings.MERCHANT_BRAND_COLOR = "red;}</style><script>"
    _s, _t, html = render_parts(template, dict(SAMPLE_CONTEXT), "en")
    assert "<script>" not in html


def test_a_customer_whose_language_has_no_template_gets_english(defaults, clock):
    MessageTemplate.objects.filter(locale="uk", code="first_notice").delete()
    assert MessageTemplate.objects.find("first_notice", "email", "uk").locale == "en"
    customer = CustomerFactory(locale="uk", email="u@example.com", currency="EUR")
    open_case(InvoiceFactory(customer=customer, amount_due="1234.56"))
    clock.tick()
    [message] = mail.outbox
    assert message.subject.startswith("We couldn't process your payment")
    # English words, Ukrainian number formatting: the locale is still the customer's.
    assert "1 234,56" in message.body.replace("\xa0", " ")
    [html] = [content for content, mime in message.alternatives if mime == "text/html"]
    assert "<!DOCTYPE html>" in html
    assert message.extra_headers["List-Unsubscribe"].startswith("<http")
    assert Notification.objects.get().status == "sent"


# --- Admin ------------------------------------------------------------------------------------------

@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_refuses_a_template_that_does_not_render_and_shows_why(staff_client, defaults):
    template = MessageTemplate.objects.get(code="reminder", channel="email", locale="en")
    url = f"/admin/notifications/messagetemplate/{template.pk}/change/"
    data = {"code": "reminder", "channel": "email", "locale": "en", "subject": "Hi {{ customer_nme }}",
            "body_text": "Pay {{ amount|floatformat:'x' }}", "body_html": ""}
    response = staff_client.post(url, data)
    assert response.status_code == 200
    assert "Unknown variable" in response.content.decode()
    data["subject"] = "Hi {{ customer_name }}"
    data["body_text"] = "Pay {% if amount %}{{ amount }}"
    response = staff_client.post(url, data)
    assert "Template error" in response.content.decode()
    template.refresh_from_db()
    assert template.subject.startswith("Reminder:")
    data["body_text"] = "Pay {{ amount }} now"
    response = staff_client.post(url, data)
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.subject == "Hi {{ customer_name }}"


def test_admin_live_preview_with_sample_data_or_a_chosen_case(staff_client, defaults):
    template = MessageTemplate.objects.get(code="final_notice", channel="email", locale="ja")
    page = staff_client.get(f"/admin/notifications/messagetemplate/{template.pk}/change/")
    assert b'formtarget="template-preview"' in page.content and b"template_preview.js" in page.content
    form = {"code": "final_notice", "channel": "email", "locale": "ja", "subject": template.subject,
            "body_text": template.body_text, "body_html": ""}
    response = staff_client.post("/admin/notifications/messagetemplate/preview/", form)
    body = response.content.decode()
    assert response.status_code == 200 and "INV-0001" in body and "sample data" in body
    assert "'unsafe-inline'" in response.headers["Content-Security-Policy"]

    customer = CustomerFactory(name="山田太郎", locale="ja", currency="JPY")
    case, _ = open_case(InvoiceFactory(customer=customer, amount_due="12000"))
    response = staff_client.post("/admin/notifications/messagetemplate/preview/",
                                 {**form, "preview_reference": f"case:{case.pk}"})
    body = response.content.decode()
    assert "山田太郎" in body and "￥12,000" in body and case.invoice.number in body

    response = staff_client.post("/admin/notifications/messagetemplate/preview/",
                                 {**form, "body_text": "{{ nope }}"})
    assert "Unknown variable" in response.content.decode()


def test_send_test_to_me(staff_client, defaults):
    sms = MessageTemplate.objects.get(code="reminder", channel="sms", locale="es")
    email = MessageTemplate.objects.get(code="reminder", channel="email", locale="it")
    response = staff_client.post("/admin/notifications/messagetemplate/",
                                 {"action": "send_test_action", "_selected_action": [sms.pk, email.pk]})
    assert response.status_code == 302
    subjects = sorted(m.subject for m in mail.outbox)
    assert all(m.to == ["staff@example.com"] for m in mail.outbox)
    assert subjects[0].startswith("[Test Email · reminder · it] Promemoria")
    assert subjects[1].startswith("[Test SMS · reminder · es]")
    assert "STOP" in mail.outbox[0].body + mail.outbox[1].body
    assert Notification.objects.count() == 0  # a test is not a customer message


def test_the_final_notice_names_the_suspension_date_in_the_customers_calendar(defaults, clock):
    import datetime

    from tests.support.clock import T0

    customer = CustomerFactory(email="d@example.com", locale="it", timezone="Europe/Rome", currency="EUR")
    open_case(InvoiceFactory(customer=customer, amount_due="1234.56"))
    clock.move_to(T0 + datetime.timedelta(days=10))
    clock.tick()
    final = [m for m in mail.outbox if m.subject.startswith("Ultimo avviso")]
    assert len(final) == 1
    # The Standard campaign suspends on day 14: 16 March 2026.
    assert "il Suo servizio sarà sospeso il 16 marzo 2026" in final[0].body
    assert "1.234,56\xa0€" in final[0].body
    # The engine caught up on ten days in one pass: the older, still unsent messages were merged
    # into the final notice rather than arriving with it.
    assert len(mail.outbox) == 1
    assert set(Notification.objects.filter(status="cancelled").values_list("template_code", flat=True)) == {
        "first_notice", "reminder"}


@pytest.mark.parametrize("referer, expected", [
    ("https://evil.example.net/phish", "/admin/notifications/messagetemplate/"),
    ("//evil.example.net/phish", "/admin/notifications/messagetemplate/"),
    ("http://testserver/admin/notifications/messagetemplate/3/change/",
     "http://testserver/admin/notifications/messagetemplate/3/change/"),
])
def test_send_test_goes_back_only_to_this_sites_own_pages(staff_client, defaults, referer, expected):
    template = MessageTemplate.objects.get(code="reminder", channel="email", locale="en")
    form = {"code": template.code, "channel": template.channel, "locale": template.locale,
            "subject": template.subject, "body_text": template.body_text, "body_html": template.body_html}
    response = staff_client.post("/admin/notifications/messagetemplate/send-test/", form, HTTP_REFERER=referer)
    assert response.status_code == 302
    assert response["Location"] == expected
    assert len(mail.outbox) == 1


# A name and an invoice number with every character HTML escapes, and an amount in a currency
# without minor units.
AWKWARD = {"customer_name": "Seán O'Brien & Sons", "contact_name": "Seán O'Brien & Sons",
           "invoice_number": "<b>&\"'", "amount": "12000", "currency": "JPY", "fees_total": "1500",
           "total_owed": "13500",
           "invoices": [{"number": "<b>&\"'", "amount": "12000", "currency": "JPY", "due_date": "2026-11-01"},
                        {"number": "INV-2", "amount": "3000", "currency": "JPY", "due_date": "2026-11-02"}],
           "fees": [{"label": "Late fee", "amount": "1500", "currency": "JPY", "invoice_number": "<b>&\"'"}]}
ESCAPED_NAME = "Seán O&#x27;Brien &amp; Sons"
ESCAPED_NUMBER = "&lt;b&gt;&amp;&quot;&#x27;"
ENTITY = re.compile(r"&(?:amp|lt|gt|quot|#x27|#39);")
DOUBLE_ESCAPED = re.compile(r"&amp;(?:amp|lt|gt|quot|#x27|#39);")
# 12000 yen with decimals in any locale's notation: "12,000.00", "12.000,00", "12 000,00".
JPY_DECIMALS = re.compile(r"\d[,.\s\u00a0\u202f]\d{3}[.,]\d{2}\b")


@pytest.mark.parametrize("locale", LOCALES)
def test_every_shipped_template_shows_names_and_numbers_as_written_and_escapes_html_once(locale):
    shipped = [d for d in SHIPPED.values() if d["locale"] == locale]
    assert {d["code"] for d in shipped} >= set(CODES) | {"portal_link", "support_ack"}
    for data in shipped:
        label = f"{data['code']}.{data['channel']}.{locale}"
        source = data["subject"] + data["body_text"]
        subject, text, html = render_parts(MessageTemplate(**data), {**SAMPLE_CONTEXT, **AWKWARD}, locale)
        # Subjects, plain text, SMS and in-app text are never HTML: the characters arrive as typed.
        assert not ENTITY.search(subject + text), (label, subject, text)
        if "customer_name" in source:
            assert "Seán O'Brien & Sons" in subject + text, label
        if "invoice_number" in source or "inv.number" in source:
            assert "<b>&\"'" in subject + text, label
        if "amount" in source:
            assert "12" in text and "000" in text and not JPY_DECIMALS.search(subject + text), (label, text)
        if data["channel"] == "email":
            # The HTML email: escaped exactly once, in the content and in the hidden preheader.
            assert not DOUBLE_ESCAPED.search(html), (label, DOUBLE_ESCAPED.search(html))
            assert "<b>" not in html, label
            if "customer_name" in data["body_text"]:
                assert ESCAPED_NAME in html, label
            if "invoice_number" in data["body_text"]:
                assert ESCAPED_NUMBER in html, label
            if "amount" in data["body_text"]:
                assert not JPY_DECIMALS.search(html), label


def test_an_html_body_escapes_merge_data_once_and_keeps_the_subject_plain():
    template = MessageTemplate(code="reminder", channel="email", locale="en",
                               subject="Invoice {{ invoice_number }} for {{ customer_name }}",
                               body_text="Hello {{ customer_name }}, {{ amount }} for {{ invoice_number }}.",
                               body_html="<p>Hello {{ customer_name }}, {{ amount }} for {{ invoice_number }}.</p>")
    subject, text, html = render_parts(template, {**SAMPLE_CONTEXT, **AWKWARD}, "en")
    assert subject == "Invoice <b>&\"' for Seán O'Brien & Sons"
    assert text == "Hello Seán O'Brien & Sons, ¥12,000 for <b>&\"'."
    assert f"<p>Hello {ESCAPED_NAME}, ¥12,000 for {ESCAPED_NUMBER}.</p>" in html
    assert not DOUBLE_ESCAPED.search(html)


def test_a_customer_with_an_apostrophe_and_ampersand_gets_their_name_as_written(defaults, clock):
    customer = CustomerFactory(name="Seán O'Brien & Sons", email="s@example.com", currency="JPY", locale="ja")
    open_case(InvoiceFactory(customer=customer, number="<b>&\"'", amount_due="12000"))
    clock.tick()
    [message] = mail.outbox
    assert "<b>&\"'" in message.subject
    assert "Seán O'Brien & Sons" in message.body and "<b>&\"'" in message.body and "￥12,000" in message.body
    [html] = [content for content, mime in message.alternatives if mime == "text/html"]
    assert ESCAPED_NAME in html and ESCAPED_NUMBER in html and not DOUBLE_ESCAPED.search(html)
